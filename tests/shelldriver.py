"""Run shell command lines in-process, as a script does, and read what they printed."""

from __future__ import annotations

import io
import json

from flashsh.protocols import ProbeOptions
from flashsh.shell import FlashShell, ShellOptions

#: sim:// option for tests: no line delays (timeouts still run in real time).
FAST = "throttle=0"


class Driver:
    """A FlashShell writing to a buffer; ``ok``/``error`` read its JSON records."""

    def __init__(self, *, json_output: bool = True, **probe_options) -> None:
        self.out = io.StringIO()
        self.shell = FlashShell(
            ShellOptions(probe=ProbeOptions(**probe_options), json=json_output, interactive=False),
            stdout=self.out,
        )

    def printed(self, line: str) -> str:
        """Run ``line``; return what it printed."""
        start = self.out.tell()
        self.shell.run_line(line)
        return self.out.getvalue()[start:]

    def run(self, line: str) -> dict:
        """Run ``line``; return its JSON record ({"ok": ..., "result"/"error": ...})."""
        printed = self.printed(line)
        records = [json.loads(x) for x in printed.splitlines() if x.startswith("{")]
        assert records, f"{line!r} printed no JSON record: {printed!r}"
        return records[-1]

    def ok(self, line: str) -> dict:
        record = self.run(line)
        assert record["ok"], f"{line!r} failed: {record.get('error')}"
        return record["result"]

    def error(self, line: str) -> str:
        record = self.run(line)
        assert not record["ok"], f"{line!r} should have failed"
        return record["error"]

    @property
    def sim(self):
        """The simulated board behind an in-process sim:// connection."""
        return self.shell.require_session().bootloader.link.port.sim

    def close(self) -> None:
        self.shell.detach()
