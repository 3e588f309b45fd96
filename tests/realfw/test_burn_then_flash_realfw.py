"""The whole path: burn a real bootloader through the simulated ISP programmer, boot the
burned flash in simavr, then flash an application through that bootloader.

The ISP simulator holds the chip flashsh burned; its flash goes into simavr as the chip's
contents, so the bootloader that answers there is exactly what was burned.
"""

from __future__ import annotations

import dataclasses
import random
import subprocess
import sys

import pytest
from harness.avrsim import AvrSim
from harness.firmware import flash_image
from shelldriver import Driver

from flashsh.images import save_image

pytestmark = pytest.mark.debian

CASES = {
    # bootloader name in tests/harness, ISP chip, preset, expected fuses, application size
    "optiboot328": ("atmega328p", "arduino", (0xFF, 0xDE, 0xFD), 20 * 1024),
    "stk500v2_mega2560": ("atmega2560", "klipper", (0xFF, 0xD8, 0xFD), 80 * 1024),
}


@pytest.mark.parametrize("name", list(CASES))
def test_burn_bootloader_then_flash_an_application_through_it(
    name, bootloader, avr_pty_binary, tmp_path
):
    chip, preset, fuses, app_size = CASES[name]
    real = bootloader(name)

    isp = Driver()
    try:
        isp.ok(f"connect --protocol stk500v2 'sim://stk500v2?mode=isp&chip={chip}&throttle=0'")
        result = isp.ok(f"burn_bootloader {real.hex_path} --preset {preset} --force")
        assert result["program"]["verified"] is True
        burned = isp.sim.flash
        assert isp.sim.fuses == fuses
        assert isp.sim.lock == 0xCF  # lock 0x0F: boot section protected, unused bits read 1
    finally:
        isp.close()

    expected_boot = flash_image(real.hex_path, real.flash_size)[real.boot_start :]
    assert burned[real.boot_start :] == expected_boot
    assert burned[: real.boot_start] == b"\xff" * real.boot_start  # chip erase did its job

    burned_hex = tmp_path / "burned.hex"
    save_image(burned_hex, real.boot_start, burned[real.boot_start :])
    board = AvrSim(
        dataclasses.replace(real, hex_path=burned_hex), tmp_path / "board", binary=avr_pty_binary
    ).start()
    try:
        app = random.Random(name).randbytes(app_size)
        app_bin = tmp_path / "app.bin"
        app_bin.write_bytes(app)
        proc = subprocess.run(
            [sys.executable, "-m", "flashsh", "-c", f"program {app_bin} verify", board.pty],
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert proc.returncode == 0, proc.stderr
    finally:
        flash = board.stop()
    assert flash[:app_size] == app
    assert flash[real.boot_start :] == expected_boot
