"""Start/stop the avr_pty simulator from Python (used by the pytest fixtures).

    sim = AvrSim(get_bootloader("optiboot328"), workdir).start()
    ... talk to sim.pty (avrdude, pyserial, flashsh) ...
    flash = sim.stop()          # whole flash as bytes, taken at SIGTERM

Opening sim.pty resets the simulated board (like DTR on an Arduino);
sim.reset() is an external reset at any time.  sim.log is the harness log
("external reset", "watchdog reset", "application entered ...", and with
park_app=False "boot section entered ... from the application").
A client that closes the port and opens it again at once may not be seen
to close (the harness polls every 0.5 ms of AVR time): leave ~0.1 s between.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import time
from pathlib import Path

from .build import build_avr_pty
from .firmware import Bootloader


class SimError(RuntimeError):
    pass


class AvrSim:
    def __init__(
        self,
        bootloader: Bootloader,
        workdir: Path,
        *,
        app: Path | None = None,
        park_app: bool = True,
        reset_delay_ms: float = 65.0,
        reset_on_open: bool = True,
        verbose: int = 0,
        binary: Path | None = None,
    ) -> None:
        self.bootloader = bootloader
        self.workdir = Path(workdir)
        self.app = app
        self.park_app = park_app
        self.reset_delay_ms = reset_delay_ms
        self.reset_on_open = reset_on_open
        self.verbose = verbose
        self.binary = Path(binary) if binary else None
        self.dump_path = self.workdir / "flash.bin"
        self.log_path = self.workdir / "avr_pty.log"
        self.pty: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.flash: bytes | None = None

    def command(self) -> list[str]:
        bl = self.bootloader
        cmd = [
            str(self.binary or build_avr_pty()),
            "-m", bl.mcu, "-f", str(bl.f_cpu), "-b", str(bl.hex_path),
            "--boot-start", hex(bl.boot_start), "-d", str(self.dump_path),
            "--reset-delay", str(self.reset_delay_ms),
        ]  # fmt: skip
        if self.app:
            cmd += ["-a", str(self.app)]
        if self.park_app:
            cmd.append("--park-app")
        if not self.reset_on_open:
            cmd.append("--no-reset-on-open")
        cmd += ["-v"] * self.verbose
        return cmd

    def start(self, timeout: float = 10.0) -> AvrSim:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=log)
        assert self.proc.stdout is not None
        # The first stdout line is the pty slave path.
        line = b""
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            deadline = time.monotonic() + timeout
            while not line.endswith(b"\n"):
                if not sel.select(max(0.0, deadline - time.monotonic())):
                    self.kill()
                    raise SimError(f"avr_pty printed no pty path\n{self.log}")
                chunk = os.read(self.proc.stdout.fileno(), 256)
                if not chunk:
                    raise SimError(f"avr_pty exited early\n{self.log}")
                line += chunk
        self.pty = line.decode().strip()
        return self

    @property
    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def events(self) -> list[tuple[float, str]]:
        """Harness log as (seconds since harness start, message)."""
        return [
            (float(m.group(1)), m.group(2))
            for m in re.finditer(r"^avr_pty: \[(\d+\.\d+)\] (.*)$", self.log, re.M)
        ]

    def wait_for_log(self, pattern: str, count: int = 1, timeout: float = 5.0) -> str:
        """Wait until ``pattern`` (a regex) occurs ``count`` times in the log."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log
            if len(re.findall(pattern, text)) >= count:
                return text
            if time.monotonic() > deadline:
                raise SimError(f"{pattern!r} x{count} not in the harness log:\n{text}")
            time.sleep(0.02)

    def reset(self) -> None:
        """External reset (the reset button), via SIGUSR1."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGUSR1)

    def stop(self, timeout: float = 10.0) -> bytes:
        """Stop the simulator; return the whole flash at that moment."""
        if self.flash is not None:
            return self.flash
        if self.proc is None:
            raise SimError("simulator not started")
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise SimError(f"avr_pty ignored SIGTERM\n{self.log}") from None
        finally:
            if self.proc.stdout:
                self.proc.stdout.close()
        if rc != 0:
            raise SimError(f"avr_pty exited with {rc}\n{self.log}")
        self.flash = self.dump_path.read_bytes()
        if len(self.flash) != self.bootloader.flash_size:
            raise SimError(f"flash dump has {len(self.flash)} bytes")
        return self.flash

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> AvrSim:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                self.stop()
            except SimError:
                self.kill()
