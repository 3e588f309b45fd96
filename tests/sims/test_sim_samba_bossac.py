"""Debian's bossac (bossa-cli 1.9.1) against the simulated SAM-BA boards on a pty.

Each run is the command line Klipper's docs give for the board (samba.md §10): bossac
identifies the chip, writes, verifies and sets the boot options through the simulator,
and the simulated flash must then hold the file, with the bootloader untouched. ``-U``
gives USB behaviour on a pty (raw S/R, 63-byte reads); without it bossac speaks the
UART protocol (auto-baud bytes, XMODEM). The boards run in this process (a PtyServer
thread) so the tests can look at them; one run goes through ``python -m flashsh.sims``.
"""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flashsh.sims.pty import PtyServer
from flashsh.sims.samba import SambaBoard

pytestmark = pytest.mark.debian

BOSSAC = shutil.which("bossac")


@pytest.fixture
def bossac() -> str:
    if BOSSAC is None:
        pytest.skip("bossac not on PATH (Debian package bossa-cli)")
    return BOSSAC


class Served:
    """A SambaBoard on a pty, served from a thread of this process."""

    def __init__(self, **options: str) -> None:
        options.setdefault("throttle", "0")
        self.sim = SambaBoard({k: [v] for k, v in options.items()})
        self.server = PtyServer(self.sim, reset_on_open=False)
        self.path = self.server.path
        self.thread = threading.Thread(target=self.server.serve, daemon=True)
        self.thread.start()
        assert self.sim.wait_for_state("monitor")

    def run(self, *args: str) -> subprocess.CompletedProcess:
        cmd = [str(BOSSAC), "-p", self.path, *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    def close(self) -> None:
        self.server.stop()
        self.thread.join(2)
        self.server.close()


@pytest.fixture
def served() -> Iterator:
    started: list[Served] = []

    def start(**options: str) -> Served:
        target = Served(**options)
        started.append(target)
        return target

    yield start
    for target in started:
        target.close()


def eventually(check, timeout: float = 5.0) -> bool:
    """True once check() holds. bossac's last write (EEFC_FCR for the boot bit) gets no
    reply, so bossac can exit while those bytes still wait in the pty for the simulator."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def firmware(path: Path, app_start: int, size: int = 20000, seed: int = 3) -> bytes:
    """A file that looks like an application: SP, a reset handler inside it, noise."""
    noise = bytes((i * 131 + seed * 17 + (i >> 7)) & 0xFF for i in range(size - 8))
    data = struct.pack("<II", 0x20008000, app_start + 0x101) + noise
    path.write_bytes(data)
    return data


@pytest.mark.parametrize(
    ("chip", "device"),
    [
        ("at91sam3x8e", "ATSAM3X8"),
        ("atsam4e8e", "ATSAM4E8"),
        ("atsamd21g18a", "ATSAMD21x18"),
        ("atsamd51j19a", "ATSAMD51x19"),
    ],
)
def test_bossac_identifies_each_chip(bossac, served, chip, device):
    board = served(chip=chip)
    result = board.run("-U", "-i")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Device       : {device}" in result.stdout
    assert board.sim.state == "monitor"


@pytest.mark.parametrize("chip", ["at91sam3x8e", "atsam4e8e"])
def test_bossac_erases_writes_verifies_and_boots_a_rom_chip(bossac, served, tmp_path, chip):
    board = served(chip=chip)
    spec = board.sim.chip.spec
    data = firmware(tmp_path / "klipper.bin", spec.flash_base)
    result = board.run("-U", "-e", "-w", "-v", "-b", "-R", str(tmp_path / "klipper.bin"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Verify successful" in result.stdout
    assert board.sim.flash[: len(data)] == data
    assert eventually(lambda: board.sim.gpnvm & 2)  # boot from flash
    erases = [c for p in board.sim.chip.planes for c in p.commands if c[0] == "EA"]
    assert len(erases) == len(spec.eefc)
    assert board.sim.wait_for_state("application")
    assert board.sim.booted == [struct.unpack("<II", data[:8])]


def test_bossac_without_erase_on_sam4e_fails_beyond_16k(bossac, served, tmp_path):
    # Without -e bossac writes with EWP, which the SAM4 refuses outside the first
    # 16 KiB (samba.md §8.2); bossac stops with a command error.
    board = served(chip="atsam4e8e")
    firmware(tmp_path / "big.bin", 0x400000, size=20000)
    result = board.run("-U", "-w", str(tmp_path / "big.bin"))
    assert result.returncode == 1
    assert board.sim.flash[0x4000:0x4200] == b"\xff" * 0x200


@pytest.mark.parametrize(("chip", "offset"), [("atsamd21g18a", 0x2000), ("atsamd51j19a", 0x4000)])
def test_bossac_writes_a_samd_behind_its_bootloader(bossac, served, tmp_path, chip, offset):
    board = served(chip=chip)
    boot = board.sim.monitor_code
    data = firmware(tmp_path / "klipper.bin", offset)
    result = board.run(
        "-U", f"--offset=0x{offset:x}", "-w", "-v", "-b", "-R", str(tmp_path / "klipper.bin")
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Verify successful" in result.stdout
    assert board.sim.flash[offset : offset + len(data)] == data
    assert board.sim.monitor_code == boot
    # Y path: each chunk is one S of up to 4096 bytes, never sharing the command packet.
    sends = [t for t in board.sim.monitor.transfers if t.command == "S"]
    assert max(t.length for t in sends) == 4096
    assert board.sim.wait_for_state("application")
    assert board.sim.booted == [struct.unpack("<II", data[:8])]


def test_bossac_notices_a_flipped_bit(bossac, served, tmp_path):
    board = served(chip="atsamd21g18a")
    data = firmware(tmp_path / "app.bin", 0x2000, size=3000)
    assert board.run("-U", "--offset=0x2000", "-w", str(tmp_path / "app.bin")).returncode == 0
    assert board.sim.flash[0x2000 : 0x2000 + len(data)] == data
    board.sim.chip.flash[0x2000 + 2999] ^= 0x10
    result = board.run("-U", "--offset=0x2000", "-v", str(tmp_path / "app.bin"))
    assert result.returncode == 2 and "Verify failed" in result.stdout


def test_bossac_over_a_uart_uses_xmodem(bossac, served, tmp_path):
    board = served(chip="atsamd21g18a", link="uart")
    data = firmware(tmp_path / "app.bin", 0x2000, size=6000)
    result = board.run("--offset=0x2000", "-w", "-v", str(tmp_path / "app.bin"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert board.sim.flash[0x2000 : 0x2000 + len(data)] == data
    links = {t.link for t in board.sim.monitor.transfers}
    assert links == {"uart"}


def test_bossac_programs_the_due_rom_over_its_uart(bossac, served, tmp_path):
    board = served(chip="at91sam3x8e", link="uart")
    data = firmware(tmp_path / "app.bin", 0x80000, size=3000)
    result = board.run("-e", "-w", "-v", "-b", str(tmp_path / "app.bin"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert board.sim.flash[: len(data)] == data
    assert eventually(lambda: board.sim.gpnvm & 2)


def test_python_m_flashsh_sims_samba_serves_bossac(bossac, tmp_path):
    data = firmware(tmp_path / "app.bin", 0x2000, size=5000)
    dump = tmp_path / "flash.bin"
    server = subprocess.Popen(
        [sys.executable, "-m", "flashsh.sims", "samba", "--chip", "atsamd21g18a",
         "--throttle", "0", "--dump", str(dump)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )  # fmt: skip
    try:
        assert server.stdout is not None
        path = server.stdout.readline().strip()
        result = subprocess.run(
            [
                str(BOSSAC),
                "-p",
                path,
                "-U",
                "--offset=0x2000",
                "-w",
                "-v",
                str(tmp_path / "app.bin"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(10)
    flash = dump.read_bytes()
    assert len(flash) == 256 * 1024
    assert flash[0x2000 : 0x2000 + len(data)] == data
