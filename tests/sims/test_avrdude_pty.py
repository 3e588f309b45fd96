"""Debian's avrdude programs and verifies images on the simulator through a pty.

The simulator runs as ``python -m flashsh.sims`` (a separate process, as a user would run
it); avrdude opens its pty, which resets the simulated board. Throttle 0 keeps the runs
short, except one small real-time run.
"""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from intelhex import IntelHex

pytestmark = pytest.mark.debian

AVRDUDE = shutil.which("avrdude")


@pytest.fixture
def avrdude() -> str:
    if AVRDUDE is None:
        pytest.skip("avrdude not on PATH (Debian package avrdude)")
    return AVRDUDE


class ServedSim:
    def __init__(self, tmp: Path, args: list[str]) -> None:
        self.flash_dump = tmp / "flash.bin"
        self.eeprom_dump = tmp / "eeprom.bin"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flashsh.sims", "stk500v1", *args,
             "--dump", str(self.flash_dump), "--dump-eeprom", str(self.eeprom_dump), "-v"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        self.path = self.proc.stdout.readline().strip()
        assert self.path.startswith("/dev/"), self.proc.stderr.read()

    def stop(self) -> tuple[bytes, bytes]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(10) == 0
        return self.flash_dump.read_bytes(), self.eeprom_dump.read_bytes()


@pytest.fixture
def served(tmp_path):
    sims: list[ServedSim] = []

    def start(*args: str) -> ServedSim:
        sim = ServedSim(tmp_path, list(args))
        sims.append(sim)
        return sim

    yield start
    for sim in sims:
        if sim.proc.poll() is None:
            sim.proc.kill()
            sim.proc.wait()


def write_hex(path: Path, data: bytes) -> Path:
    ih = IntelHex()
    ih.frombytes(data, offset=0)
    ih.write_hex_file(str(path))
    return path


def run_avrdude(avrdude: str, part: str, port: str, baud: int, *ops: str):
    cmd = [avrdude, "-p", part, "-c", "arduino", "-P", port, "-b", str(baud), "-D", *ops]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("part", "sim_args", "baud", "size"),
    [
        ("m328p", ["--chip", "atmega328p"], 115200, 0x7E00),
        ("m328p", ["--chip", "atmega328p", "--bootloader", "atmegaboot"], 57600, 0x7800),
        # 256-byte pages, data far above 64 KiB (word address bit 15 through RAMPZ).
        ("m1284p", ["--chip", "atmega1284p"], 115200, 0x1FC00),
    ],
    ids=["optiboot-328p", "atmegaboot-328p", "optiboot-1284p"],
)
def test_avrdude_writes_and_verifies_random_image(
    avrdude, served, tmp_path, part, sim_args, baud, size
):
    rng = random.Random(size)
    image = bytes(rng.randrange(256) for _ in range(size))
    hexfile = write_hex(tmp_path / "img.hex", image)
    sim = served(*sim_args, "--throttle", "0")
    done = run_avrdude(avrdude, part, sim.path, baud, "-U", f"flash:w:{hexfile}:i")
    assert done.returncode == 0, done.stderr
    assert f"{size} bytes of flash verified" in done.stderr
    # A second avrdude run, a fresh open: verify only.
    done = run_avrdude(avrdude, part, sim.path, baud, "-U", f"flash:v:{hexfile}:i")
    assert done.returncode == 0, done.stderr
    assert f"{size} bytes of flash verified" in done.stderr
    flash, _ = sim.stop()
    assert flash[:size] == image
    # The bootloader's own section is untouched.
    assert b"\xff" * 16 not in flash[size:-2]


def test_avrdude_eeprom_through_atmegaboot(avrdude, served, tmp_path):
    data = bytes(random.Random(7).randrange(256) for _ in range(1024))
    eeprom = write_hex(tmp_path / "ee.hex", data)
    sim = served("--chip", "atmega328p", "--bootloader", "atmegaboot", "--throttle", "0")
    done = run_avrdude(avrdude, "m328p", sim.path, 57600, "-U", f"eeprom:w:{eeprom}:i")
    assert done.returncode == 0, done.stderr
    assert "1024 bytes of eeprom verified" in done.stderr
    flash, ee = sim.stop()
    assert ee == data
    assert flash[:0x7800] == b"\xff" * 0x7800


def test_avrdude_eeprom_write_on_optiboot_44_trashes_flash(avrdude, served, tmp_path):
    # The Uno bootloader ignores the memory type: avrdude's EEPROM blocks are written
    # into flash and the read-back does not match (avrdude issue #1377).
    eeprom = write_hex(tmp_path / "ee.hex", bytes(range(256)) * 4)
    sim = served("--chip", "atmega328p", "--version", "4.4", "--throttle", "0")
    done = run_avrdude(avrdude, "m328p", sim.path, 115200, "-U", f"eeprom:w:{eeprom}:i")
    assert done.returncode != 0
    assert "verification mismatch" in done.stderr
    flash, ee = sim.stop()
    assert ee == b"\xff" * 1024
    assert flash[:128] != b"\xff" * 128


def test_avrdude_in_real_time(avrdude, served, tmp_path):
    image = bytes(random.Random(3).randrange(256) for _ in range(1024))
    hexfile = write_hex(tmp_path / "img.hex", image)
    sim = served("--chip", "atmega328p", "--throttle", "1")
    done = run_avrdude(avrdude, "m328p", sim.path, 115200, "-U", f"flash:w:{hexfile}:i")
    assert done.returncode == 0, done.stderr
    flash, _ = sim.stop()
    assert flash[:1024] == image
