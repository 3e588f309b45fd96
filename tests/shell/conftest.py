"""An in-process shell on the built-in simulator, with results read from last_result."""

from __future__ import annotations

import io
import json

import pytest

from flashsh.protocols import ProbeOptions
from flashsh.shell import FlashShell, ShellOptions

FAST = "throttle=0"


class Driver:
    """Runs command lines the way a script does and keeps what they printed."""

    def __init__(self, **options) -> None:
        self.out = io.StringIO()
        self.shell = FlashShell(
            ShellOptions(probe=ProbeOptions(**options), json=True, interactive=False),
            stdout=self.out,
        )

    def run(self, line: str) -> dict:
        """Run ``line``; return its JSON record ({"ok": ..., "result"/"error": ...})."""
        start = self.out.tell()
        self.shell.run_line(line)
        printed = self.out.getvalue()[start:]
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
        return self.shell.require_session().bootloader.link.port.sim

    def close(self) -> None:
        self.shell.detach()


@pytest.fixture
def shell():
    drivers: list[Driver] = []

    def make(url: str | None = None, **options) -> Driver:
        driver = Driver(**options)
        drivers.append(driver)
        if url is not None:
            driver.ok(f"connect '{url}'")
        return driver

    yield make
    for driver in drivers:
        driver.close()
