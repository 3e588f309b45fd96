"""burn_bootloader and script variables, on the simulated ISP programmer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from shelldriver import Driver

from flashsh.images import save_image

REPO = Path(__file__).resolve().parents[2]
ISP_2560 = "sim://stk500v2?mode=isp&chip=atmega2560&throttle=0"
BOOT_2560 = 0x3E000


@pytest.fixture
def isp():
    drivers = []

    def make(url: str = ISP_2560) -> Driver:
        driver = Driver()
        drivers.append(driver)
        driver.ok(f"connect --protocol stk500v2 '{url}'")
        return driver

    yield make
    for driver in drivers:
        driver.close()


@pytest.fixture
def fake_bootloader(tmp_path):
    """A stand-in bootloader image placed where the 2560's 8 KiB boot section starts."""
    path = tmp_path / "boot.hex"
    save_image(path, BOOT_2560, bytes(range(256)) * 8)
    return path


def test_burn_sets_fuses_writes_and_locks(isp, fake_bootloader):
    sh = isp()
    result = sh.ok(f"burn_bootloader {fake_bootloader} --preset klipper --force")
    assert result["erase"] is True
    assert sh.sim.flash[BOOT_2560 : BOOT_2560 + 2048] == bytes(range(256)) * 8
    assert sh.sim.fuses == (0xFF, 0xD8, 0xFD)
    assert sh.sim.lock == 0xCF


def test_guard_refuses_before_anything_is_erased(isp, fake_bootloader, tmp_path):
    app = tmp_path / "app.bin"
    app.write_bytes(b"\x5a" * 512)
    sh = isp()
    sh.ok(f"program {app}")
    error = sh.error(f"burn_bootloader {fake_bootloader} --preset klipper")
    assert "--force" in error and "CKSEL" in error
    assert sh.sim.flash[:512] == b"\x5a" * 512  # not erased
    assert sh.sim.fuses == (0x62, 0x99, 0xFF)  # factory values kept


def test_image_outside_the_boot_section_is_refused(isp, tmp_path):
    misplaced = tmp_path / "boot.hex"
    save_image(misplaced, 0x3F000, b"\x01" * 256)  # a 4 KiB bootloader; klipper sets 8 KiB
    sh = isp()
    error = sh.error(f"burn_bootloader {misplaced} --preset klipper --force")
    assert "0x0003f000" in error and "0x0003e000" in error and "BOOTSZ" in error
    assert sh.sim.fuses == (0x62, 0x99, 0xFF)


def test_a_bootloader_cannot_burn_a_bootloader(fake_bootloader):
    sh = Driver()
    try:
        sh.ok("connect 'sim://stk500v1?chip=atmega328p&throttle=0'")
        error = sh.error(f"burn_bootloader {fake_bootloader}")
        assert "cannot burn a bootloader" in error and "ISP programmer" in error
    finally:
        sh.close()


def run_flashsh(*args: str):
    return subprocess.run(
        [sys.executable, "-m", "flashsh", *args], capture_output=True, text=True, timeout=300
    )


def test_recipe_takes_the_bootloader_as_a_variable(fake_bootloader):
    recipe = REPO / "scripts" / "burn_bootloader_mega2560.fsh"
    result = run_flashsh("-D", f"BOOTLOADER={fake_bootloader}", "-s", str(recipe), ISP_2560)
    assert result.returncode == 0, result.stderr
    assert "lock  0xcf" in result.stdout


def test_undefined_variable_stops_the_script_at_its_line(tmp_path):
    script = tmp_path / "x.fsh"
    script.write_text("echo one\necho ${WHO}\necho ${GREETING:-hello}\n")
    result = run_flashsh("-s", str(script))
    assert result.returncode == 1
    assert f"{script}:2: ${{WHO}} is not defined" in result.stderr
    result = run_flashsh("-D", "WHO=world", "-s", str(script))
    assert result.returncode == 0
    assert result.stdout.split() == ["one", "world", "hello"]
