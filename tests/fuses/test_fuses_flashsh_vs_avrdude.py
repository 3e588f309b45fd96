"""flashsh and Debian's avrdude take turns on the same simulated ISP programmer: what one
writes (fuses, lock, flash), the other reads back the same."""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import threading

import pytest

from flashsh.images import save_image
from flashsh.sims import sim_class
from flashsh.sims.pty import PtyServer
from flashsh.sims.url import parse_sim_url

pytestmark = pytest.mark.debian


@pytest.fixture
def programmer():
    """An STK500v2 ISP programmer with an ATmega328P behind it, on a pty."""
    if shutil.which("avrdude") is None:
        pytest.skip("avrdude not installed (Debian package avrdude)")
    protocol, options = parse_sim_url("sim://stk500v2?mode=isp&chip=atmega328p&throttle=0")
    sim = sim_class(protocol).from_options(options, host_baud=None)
    server = PtyServer(sim)
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    yield sim, server.path
    server.stop()
    thread.join(2.0)
    server.close()


def avrdude(port: str, *ops: str) -> str:
    proc = subprocess.run(
        ["avrdude", "-p", "m328p", "-c", "stk500v2", "-P", port, "-B", "10", *ops],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def flashsh(port: str, commands: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "flashsh", "--protocol", "stk500v2", "-c", commands, port],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def read_with_avrdude(port: str) -> list[int]:
    out = avrdude(port, *(f"-U{m}:r:-:h" for m in ("lfuse", "hfuse", "efuse", "lock")))
    return [int(line, 16) for line in out.split()]


def test_avrdude_reads_what_flashsh_wrote(programmer, tmp_path):
    sim, port = programmer
    flashsh(port, "fuse preset arduino --force; lock write 0x0f")
    assert read_with_avrdude(port) == [0xFF, 0xDE, 0xFD, 0xCF]
    # Flash: flashsh programs after a chip erase, avrdude verifies.
    image = random.Random(7).randbytes(6000)
    hexfile = tmp_path / "app.hex"
    save_image(hexfile, 0, image)
    flashsh(port, f"mass_erase; program {hexfile} verify")
    avrdude(port, f"-Uflash:v:{hexfile}:i")


def test_flashsh_reads_what_avrdude_wrote(programmer):
    sim, port = programmer
    avrdude(port, "-Ulfuse:w:0xf7:m", "-Uhfuse:w:0xd9:m", "-Uefuse:w:0xfc:m", "-Ulock:w:0x3c:m")
    out = flashsh(port, "fuse read; lock read").stdout
    assert "lfuse 0xf7" in out and "hfuse 0xd9" in out
    assert "efuse 0xfc" in out  # bits 7:3 unused read as 1: 0xfc as written
    assert "lock  0xfc" in out
    assert sim.fuses == (0xF7, 0xD9, 0xFC)
