"""Debian's avrdude against real Arduino bootloaders running in simavr.

This checks the simulator harness itself (a known-good client must be able to
program and verify the real firmware) and gives the reference timings for the
flashsh tests that use the same harness.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import time

import pytest
from harness.firmware import flash_image

pytestmark = pytest.mark.debian


@pytest.fixture(scope="module")
def avrdude() -> str:
    path = shutil.which("avrdude")
    if not path:
        pytest.skip("avrdude not installed (Debian package avrdude)")
    return path


def run_avrdude(avrdude, bl, port, *ops: str) -> tuple[subprocess.CompletedProcess, float]:
    cmd = [avrdude, "-p", bl.avrdude_part, "-c", "arduino", "-P", port, "-b", str(bl.baud), "-D"]
    t0 = time.monotonic()
    proc = subprocess.run([*cmd, *ops], capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, f"{' '.join(proc.args)}\n{proc.stdout}{proc.stderr}"
    return proc, elapsed


def check_flash(flash: bytes, bl, image: bytes) -> None:
    """Application area = image then erased; boot section = the bootloader's hex."""
    assert len(flash) == bl.flash_size
    assert flash[: len(image)] == image
    assert flash[len(image) : bl.boot_start] == b"\xff" * (bl.boot_start - len(image))
    expected_boot = flash_image(bl.hex_path, bl.flash_size)[bl.boot_start :]
    assert flash[bl.boot_start :] == expected_boot, "bootloader section changed"


def test_avrdude_programs_28k_on_optiboot328(avr_sim, avrdude, tmp_path, record_property):
    image = random.Random(328).randbytes(28 * 1024)
    img = tmp_path / "img.bin"
    img.write_bytes(image)
    sim = avr_sim("optiboot328")
    bl = sim.bootloader

    # write + avrdude's automatic read-back verify
    proc, t_write = run_avrdude(avrdude, bl, sim.pty, "-U", f"flash:w:{img}:r")
    assert f"{len(image)} bytes of flash verified" in proc.stderr
    # optiboot's LEAVE_PROGMODE: watchdog reset, then the application starts
    sim.wait_for_log(r"watchdog reset", timeout=3)
    sim.wait_for_log(r"application entered at 0x0000", timeout=3)

    # A second run must work too: opening the port resets the board again.
    proc, t_verify = run_avrdude(avrdude, bl, sim.pty, "-U", f"flash:v:{img}:r")
    assert f"{len(image)} bytes of flash verified" in proc.stderr
    log = sim.wait_for_log(r"external reset \(port opened\)", count=2)

    flash = sim.stop()
    check_flash(flash, bl, image)
    assert log.count("external reset (port opened)") == 2
    record_property("avrdude_write_verify_s", round(t_write, 2))
    record_property("avrdude_verify_s", round(t_verify, 2))
    print(f"avrdude 28 KiB write+verify {t_write:.1f} s, verify-only {t_verify:.1f} s")


@pytest.mark.parametrize("name", ["atmegaboot328", "optiboot168"])
def test_avrdude_programs_4k_on_other_bootloaders(avr_sim, avrdude, tmp_path, name):
    image = random.Random(name).randbytes(4096)
    img = tmp_path / "img.bin"
    img.write_bytes(image)
    sim = avr_sim(name)
    proc, elapsed = run_avrdude(avrdude, sim.bootloader, sim.pty, "-U", f"flash:w:{img}:r")
    assert f"{len(image)} bytes of flash verified" in proc.stderr
    check_flash(sim.stop(), sim.bootloader, image)
    print(f"avrdude 4 KiB write+verify on {name}: {elapsed:.1f} s")
