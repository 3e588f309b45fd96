"""Debian's stm32flash against the simulated STM32 ROM on a pseudo-terminal.

A pty cannot carry parity (the Linux pty driver clears PARENB), so stm32flash runs with
``-m 8n1``; the simulator still times bytes as 8E1. The sims run in this process (a
PtyServer thread) so the tests can look at what the ROM did; one test goes through
``python -m flashsh.sims`` as a user would. Throttle 0 keeps the runs short.
"""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from flashsh.sims.pty import PtyServer
from flashsh.sims.stm32 import Stm32Sim

pytestmark = pytest.mark.debian

STM32FLASH = shutil.which("stm32flash")
GET, GET_VERSION, GET_ID = 0x00, 0x01, 0x02
READ, GO, WRITE, ERASE, EXTENDED_ERASE = 0x11, 0x21, 0x31, 0x43, 0x44
KIB = 1024


@pytest.fixture
def stm32flash() -> str:
    if STM32FLASH is None:
        pytest.skip("stm32flash not on PATH (Debian package stm32flash)")
    return STM32FLASH


class Served:
    """A Stm32Sim on a pty, served from a thread of this process."""

    def __init__(self, query: str) -> None:
        options = parse_qs(query)
        options.setdefault("throttle", ["0"])
        self.sim = Stm32Sim.from_options(options, host_baud=None)
        self.server = PtyServer(self.sim, reset_on_open=self.sim.resets_on_open)
        self.path = self.server.path
        self.thread = threading.Thread(target=self.server.serve, daemon=True)
        self.thread.start()
        # The ROM listens once the chip is out of reset; a 0x7F before that is lost.
        assert self.sim.mcu.wait_for_state("bootloader")

    def run(self, tool: str, *args: str, mode: str = "8n1") -> subprocess.CompletedProcess:
        cmd = [tool, "-m", mode, "-b", "115200", *args, self.path]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    def close(self) -> None:
        # Let the serving loop end before its descriptors are closed under it.
        self.server.stop()
        self.thread.join(2)
        self.server.close()


@pytest.fixture
def served() -> Iterator:
    started: list[Served] = []

    def start(query: str) -> Served:
        target = Served(query)
        started.append(target)
        return target

    yield start
    for target in started:
        target.close()


def random_image(path: Path, size: int, seed: int = 1) -> bytes:
    data = random.Random(seed).randbytes(size)
    path.write_bytes(data)
    return data


def commands(sim: Stm32Sim, code: int) -> list[tuple]:
    return [step for step in sim.rom.history if step[0] == code]


@pytest.mark.parametrize(
    ("chip", "erase"),
    [
        # F1 medium density: 1 KiB pages through Erase (0x43).
        ("stm32f103c8", (ERASE, list(range(64)))),
        # F401: the four 16 KiB sectors hold 64 KiB, through Extended Erase (0x44).
        ("stm32f401cc", (EXTENDED_ERASE, [0, 1, 2, 3])),
    ],
)
def test_write_verify_read_erase_go(stm32flash, served, tmp_path, chip, erase):
    image = random_image(tmp_path / "img.bin", 64 * KIB)
    target = served(f"chip={chip}")
    sim = target.sim

    done = target.run(stm32flash, "-w", str(tmp_path / "img.bin"), "-v")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Wrote and verified address 0x08010000 (100.00%) Done." in done.stdout
    assert sim.flash[: 64 * KIB] == image
    assert sim.rom.history[:3] == [(GET_VERSION,), (GET,), (GET_ID,)]
    assert commands(sim, erase[0]) == [erase]
    writes = commands(sim, WRITE)
    assert writes == [(WRITE, 0x08000000 + n * 256, 256) for n in range(256)]
    # -v reads every block back right after writing it.
    assert commands(sim, READ) == [(READ, a, n) for _, a, n in writes]

    # Read back: stm32flash reads the PID group's whole flash.
    done = target.run(stm32flash, "-r", str(tmp_path / "out.bin"))
    assert done.returncode == 0, done.stdout + done.stderr
    out = (tmp_path / "out.bin").read_bytes()
    assert out == sim.flash and out[: 64 * KIB] == image
    # The second run met a synchronised ROM: 7F opened a command, 7F drew NACK.
    assert any("bad command pair 7F 7F" in e.what for e in sim.mcu.events)

    done = target.run(stm32flash, "-o")
    assert done.returncode == 0, done.stdout + done.stderr
    assert sim.rom.history[-1] == (erase[0], "mass")
    assert sim.flash == b"\xff" * len(sim.flash)

    done = target.run(stm32flash, "-g", "0x08000000")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Starting execution at address 0x08000000... done." in done.stdout
    assert sim.mcu.wait_for_state("application")
    assert sim.rom.jumps == [0x08000000]


def test_write_verify_on_an_f407(stm32flash, served, tmp_path):
    # 96 KiB reaches into sector 4 (64 KiB at 0x08010000): five sectors are erased.
    image = random_image(tmp_path / "img.bin", 96 * KIB, seed=407)
    target = served("chip=stm32f407vg")
    done = target.run(stm32flash, "-w", str(tmp_path / "img.bin"), "-v", "-g", "0")
    assert done.returncode == 0, done.stdout + done.stderr
    assert target.sim.flash[: 96 * KIB] == image
    assert target.sim.flash[96 * KIB : 128 * KIB] == b"\xff" * (32 * KIB)
    assert commands(target.sim, EXTENDED_ERASE) == [(EXTENDED_ERASE, [0, 1, 2, 3, 4])]
    assert target.sim.rom.jumps == [0x08000000]


@pytest.mark.parametrize(
    ("size", "last_write", "last_read"),
    [(3000, (WRITE, 0x08000B00, 184), (READ, 0x08000B00, 184)),
     (3001, (WRITE, 0x08000B00, 188), (READ, 0x08000B00, 185))],
)  # fmt: skip
def test_golden_trace_of_a_small_file(stm32flash, served, tmp_path, size, last_write, last_read):
    # stm32-testing.md §1.2: PID 0x410 with Erase (0x43).
    image = random_image(tmp_path / "fw.bin", size)
    target = served("chip=stm32f103c8")
    done = target.run(stm32flash, "-w", str(tmp_path / "fw.bin"), "-v", "-g", "0")
    assert done.returncode == 0, done.stdout + done.stderr
    history = target.sim.rom.history
    assert history[:4] == [(GET_VERSION,), (GET,), (GET_ID,), (ERASE, [0, 1, 2])]
    body = history[4:-1]
    assert len(body) == 24  # 12 write/verify pairs
    assert body[-2:] == [last_write, last_read]
    assert history[-1] == (GO, 0x08000000)
    flash = target.sim.flash
    # The tail was padded with 0xFF to a multiple of 4; everything after stays erased.
    assert flash[:size] == image and flash[size : 3 * KIB] == b"\xff" * (3 * KIB - size)


def test_golden_trace_with_extended_erase(stm32flash, served, tmp_path):
    # F042: 1 KiB pages offered through Extended Erase, 16-bit page numbers.
    random_image(tmp_path / "fw.bin", 3000)
    target = served("chip=stm32f042k6")
    done = target.run(stm32flash, "-w", str(tmp_path / "fw.bin"), "-v")
    assert done.returncode == 0, done.stdout + done.stderr
    assert commands(target.sim, EXTENDED_ERASE) == [(EXTENDED_ERASE, [0, 1, 2])]


def test_reset_through_a_ram_stub(stm32flash, served):
    target = served("chip=stm32f103c8")
    done = target.run(stm32flash, "-R")
    assert done.returncode == 0, done.stdout + done.stderr
    history = target.sim.rom.history
    # 24 bytes at the first free RAM address, then Go there; the stub resets the chip.
    assert history[3:] == [(WRITE, 0x20000200, 24), (GO, 0x20000200)]
    assert any("SYSRESETREQ" in e.what for e in target.sim.mcu.events)
    assert target.sim.mcu.wait_for_state("bootloader")
    assert not target.sim.synced


def test_read_protection_on_and_off(stm32flash, served, tmp_path):
    image = random_image(tmp_path / "img.bin", 4 * KIB)
    target = served("chip=stm32f103c8&image=" + str(tmp_path / "img.bin"))
    sim = target.sim
    assert sim.flash[: 4 * KIB] == image
    done = target.run(stm32flash, "-j")
    assert done.returncode == 0, done.stdout + done.stderr
    assert sim.memory.rdp_level == 1
    done = target.run(stm32flash, "-r", str(tmp_path / "out.bin"))
    assert done.returncode != 0
    assert "Failed to read memory at address 0x08000000" in done.stderr
    done = target.run(stm32flash, "-k")
    assert done.returncode == 0, done.stdout + done.stderr
    assert sim.memory.rdp_level == 0
    assert sim.flash == b"\xff" * len(sim.flash)


def test_write_unprotect(stm32flash, served):
    target = served("chip=stm32f103c8&wrp=0,1")
    assert target.sim.memory.protected_units() == list(range(8))
    done = target.run(stm32flash, "-u")
    assert done.returncode == 0, done.stdout + done.stderr
    assert target.sim.memory.protected_units() == []


def test_default_8e1_fails_on_a_pty(stm32flash, served):
    # The pty driver drops PARENB and stm32flash checks the settings it reads back.
    target = served("chip=stm32f103c8")
    done = target.run(stm32flash, mode="8e1")
    assert done.returncode != 0
    assert "Failed to set terminal flags" in done.stderr


def test_through_python_m_flashsh_sims(stm32flash, tmp_path):
    image = random_image(tmp_path / "img.bin", 8 * KIB, seed=9)
    dump = tmp_path / "flash.bin"
    proc = subprocess.Popen(
        [sys.executable, "-m", "flashsh.sims", "stm32", "--chip", "stm32f103c8",
         "--throttle", "0", "--dump", str(dump)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        path = proc.stdout.readline().strip()
        assert path.startswith("/dev/"), proc.stderr.read() if proc.stderr else ""
        cmd = [stm32flash, "-m", "8n1", "-b", "115200", "-w", str(tmp_path / "img.bin"), "-v"]
        done = subprocess.run([*cmd, path], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    flash = dump.read_bytes()
    assert len(flash) == 128 * KIB
    assert flash[: 8 * KIB] == image and flash[8 * KIB :] == b"\xff" * (120 * KIB)
