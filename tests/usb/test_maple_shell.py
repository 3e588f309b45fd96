"""The STM32duino bootloader from the shell and the command line, as a user drives it:
program/verify/reset, refusals as one line, and the simulated bus plugged in through
``--usb-backend``."""

from __future__ import annotations

import os
import struct

import pytest

from flashsh.protocols import usb_session_for
from flashsh.session import Session
from flashsh.sims.usb_bus import SimUsbBackend, SimUsbBus, make_device
from flashsh.transports.usb import open_usb
from tests.clirun import run_flashsh
from tests.shelldriver import Driver

BASE = 0x08002000


@pytest.fixture
def app_bin(tmp_path):
    path = tmp_path / "app.bin"
    path.write_bytes(struct.pack("<II", 0x20005000, BASE + 0x101) + os.urandom(2992))
    return path


@pytest.fixture
def shell():
    """A shell on a simulated Blue Pill whose application is Klipper on USB."""
    bus = SimUsbBus()
    sim = make_device("sim://maple?throttle=0&app=klipper")
    bus.plug(sim)
    link = open_usb("usb:1eaf:0003", backend=SimUsbBackend(bus))
    driver = Driver()
    driver.shell.attach(Session(usb_session_for(link), "sim://maple"))
    yield driver, sim
    driver.close()


def test_program_verify_reset_on_the_command_line(app_bin):
    result = run_flashsh(
        "-c", f"program {app_bin} 0x08002000 verify reset", "sim://maple?throttle=0"
    )
    assert result.returncode == 0, result.stderr
    assert "wrote 3 of 3 pages (3000 bytes at 0x08002000)" in result.stdout
    assert "verified; application started" in result.stdout


def test_the_simulated_bus_through_the_backend_option(app_bin):
    result = run_flashsh(
        "--usb-backend",
        "flashsh.sims.usb_bus:backend",
        "-c",
        f"usb; program {app_bin} verify; verify_image {app_bin}",
        "usb:1eaf:0003",
        env={"FLASHSH_SIM_USB": "sim://maple?throttle=0"},
    )
    assert result.returncode == 0, result.stderr
    assert "1eaf:0003" in result.stdout and "verified" in result.stdout
    assert "3000 bytes match the chip" in result.stdout


def test_program_and_reset_in_the_shell_follow_the_board(shell, app_bin):
    driver, sim = shell
    result = driver.ok(f"program {app_bin} verify reset")
    assert result["verified"] and result["reset"] and result["notes"] == []
    assert sim.app_starts == [BASE]
    assert driver.ok("info")["protocol"] == "usb-application"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("program {bin} 0x08003000", "writes only from 0x08002000 (alt 2) or 0x08005000 (alt 1)"),
        ("program {bin} 0x20000C00", 'alt 0 says "ERROR. Upload to RAM not supported."'),
        ("program {bin} 0x08000000", "inside the bootloader"),
        ("program {bin} diff", "`diff` cannot skip the pages that match"),
        ("read_bank flash {dir}/out.bin", "read_bank flash FILE 0x2000"),
    ],
)
def test_refusals_are_one_line(shell, app_bin, line, expected):
    driver, sim = shell
    error = driver.error(line.format(bin=app_bin, dir=app_bin.parent))
    assert expected in error and "\n" not in error
    assert sim.hard_resets == 0


def test_a_partial_image_prints_the_note(shell, app_bin, tmp_path):
    driver, sim = shell
    long = tmp_path / "long.bin"
    long.write_bytes(struct.pack("<II", 0x20005000, BASE + 0x101) + b"\x42" * 8000)
    driver.ok(f"program {long}")
    driver.shell.options.json = False
    printed = driver.printed(f"program {app_bin} verify")
    assert "note: flash from 0x08002c00 still holds older data" in printed
