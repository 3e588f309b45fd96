"""The STM32 ROM DFU device as a user meets it: the shell's commands, and the command
line with the simulated bus plugged in through --usb-backend."""

from __future__ import annotations

import json
import random
import struct

import pytest
from shelldriver import Driver

from flashsh.sims import usb_bus
from flashsh.sims.usb_bus import SimUsbBus, make_device
from tests.clirun import run_flashsh as flashsh

BACKEND = "flashsh.sims.usb_bus:backend"
FLASH = 0x08000000


@pytest.fixture
def board(monkeypatch):
    """Plug simulated devices into the bus ``--usb-backend flashsh.sims.usb_bus:backend``
    serves in this process."""
    bus = SimUsbBus()
    monkeypatch.setattr(usb_bus, "_DEFAULT", bus)

    def plug(url: str):
        sim = make_device(url)
        bus.plug(sim)
        return sim

    return plug


@pytest.fixture
def app(tmp_path):
    """A 20 KiB application: vector table for 0x08000000, then random code."""
    body = random.Random(7).randbytes(20 * 1024 - 8)
    path = tmp_path / "app.bin"
    path.write_bytes(struct.pack("<II", 0x20004000, FLASH + 0x101) + body)
    return path


@pytest.fixture
def shell():
    drivers: list[Driver] = []

    def make() -> Driver:
        driver = Driver(usb_backend=BACKEND)
        drivers.append(driver)
        return driver

    yield make
    for driver in drivers:
        driver.close()


def test_list_connect_program_verify_reset_and_back(board, app, shell):
    sim = board("sim://dfuse?chip=stm32f072&throttle=0&app=klipper")
    sh = shell()
    (listed,) = sh.ok("usb")
    assert listed["target"] == "usb:0483:df11:FFFFFFFEFFFF" and listed["kind"] == "dfuse"
    info = sh.ok("connect usb:0483:df11")
    assert info["chip"] == "STM32F072/F070xB/F071"
    result = sh.ok(f"program {app} verify reset")
    assert result["verified"] and result["reset"] and result["erased"] == "0x08000000-0x08004fff"
    assert sim.jumped_to == FLASH
    assert sim.flash[: 20 * 1024] == app.read_bytes()
    # Klipper runs now; `bootloader` sends it back into the ROM (1200-baud touch).
    assert "not a bootloader" in sh.error("read_bank flash out.bin 0 16")
    sh.ok("bootloader")
    assert sh.ok(f"verify_image {app}")["match"]
    assert sim.boots == 2


def test_erase_and_mass_erase_commands(board, app, shell):
    sim = board("sim://dfuse?chip=stm32f407&throttle=0")
    sh = shell()
    sh.ok("connect usb")
    sh.ok(f"program {app}")
    erased = sh.ok("erase 0x08004000 16K")
    assert (erased["start"], erased["end"]) == (FLASH + 0x4000, FLASH + 0x8000)
    assert sim.flash[:0x4000] == app.read_bytes()[:0x4000]
    assert sh.ok("mass_erase")["method"] == "chip erase"
    assert sim.flash == b"\xff" * len(sim.flash)


def test_read_protection_then_unprotect(board, app, shell):
    sim = board("sim://dfuse?chip=stm32f072&throttle=0&rdp=1")
    sim.memory.load([(FLASH, b"\x42" * 256)])
    sh = shell()
    sh.ok("connect usb")
    error = sh.error(f"program {app}")
    assert error.endswith("(`unprotect readout` erases the chip to remove it)")
    assert "read-out protection is on" in error and "\n" not in error
    assert sh.ok("options read")["readout_protection"] == 1
    # -c and scripts count as the consent `unprotect readout` asks for.
    result = sh.ok("unprotect readout")
    assert result["changed"] and result["readout_protection"] == 0
    assert sim.memory.rdp_level == 0 and sim.flash[:256] == b"\xff" * 256
    sh.ok(f"program {app} verify")


def test_a_shell_error_for_an_address_the_rom_refuses(board, shell):
    board("sim://dfuse?chip=stm32f072&throttle=0")
    sh = shell()
    sh.ok("connect usb")
    assert "address not allowed (errTARGET)" in sh.error("go 0x30000000")


def test_program_verify_reset_on_the_command_line_ends_in_success(app):
    # The application does not use USB: the board leaves the bus for good after the
    # leave, which dfu-util reports as "Error during download get_status".
    run = flashsh("-c", f"program {app} verify reset", "sim://dfuse?chip=stm32f072&throttle=0")
    assert run.returncode == 0, run.stderr
    assert "verified; application started" in run.stdout
    assert "error" not in run.stderr.lower()


def test_the_simulated_bus_through_the_backend_option(app):
    run = flashsh(
        "--usb-backend", BACKEND, "--json", "-c", f"usb; program {app} verify; reset; info",
        "usb", env={"FLASHSH_SIM_USB": "sim://dfuse?chip=stm32f407&throttle=0&app=klipper"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert all(r["ok"] for r in records)
    assert records[-1]["result"]["protocol"] == "usb-application"
    assert records[-1]["result"]["chip"] == "stm32f407xx"


def test_an_image_too_large_is_one_line_and_a_failure(tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(200 * 1024))
    run = flashsh("-c", f"program {big}", "sim://dfuse?chip=stm32f072&throttle=0")
    assert run.returncode != 0
    (line,) = run.stderr.strip().splitlines()
    assert "larger than the flash" in line and "128 KiB" in line


def test_a_dfuse_file_with_two_elements_and_an_option_byte_target(board, app, shell, tmp_path):
    from flashsh.images.dfu_file import Element, Target, encode_dfuse

    sim = board("sim://dfuse?chip=stm32f407&throttle=0")
    table = bytes(range(256)) * 4
    firmware = tmp_path / "firmware.dfu"
    firmware.write_bytes(
        encode_dfuse([
            Target(0, (Element(FLASH, app.read_bytes()), Element(FLASH + 0x20000, table)),
                   "Internal Flash"),
            Target(1, (Element(0x1FFFC000, bytes(16)),), "Option Bytes"),
        ])
    )  # fmt: skip
    sh = shell()
    sh.ok("connect usb")
    result = sh.ok(f"program {firmware} verify")
    assert result["erased"] == "0x08000000-0x08007fff, 0x08020000-0x0803ffff"
    assert sim.memory.stats.erased == [0, 1, 5]
    assert sim.flash[: len(app.read_bytes())] == app.read_bytes()
    assert sim.flash[0x20000 : 0x20000 + len(table)] == table
    # The alt 1 target is left out: flashsh never writes option bytes.
    assert bytes(sim.memory.option) == bytes(sim.chip.option_bytes.default)
