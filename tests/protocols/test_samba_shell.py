"""SAM-BA commands in the shell, on the fake monitors: info, gpnvm, program's refusals
as one-line errors, and a SAM board whose application answers instead."""

from __future__ import annotations

import struct

import pytest

from flashsh.protocols.samba import connect
from flashsh.protocols.samba_entry import SamApplication
from flashsh.session import Session
from tests.protocols.samba_fake import FakeSam3x, FakeSamd21
from tests.protocols.samba_links import ScriptedLink
from tests.shelldriver import Driver


@pytest.fixture
def driver():
    d = Driver()
    yield d
    d.close()


def attach(driver: Driver, link) -> None:
    driver.shell.attach(Session(connect(link), "fake"))


def test_info_names_chip_flash_bootloader_and_bits(driver):
    attach(driver, FakeSam3x())
    info = driver.ok("info")
    assert info["chip"] == "AT91SAM3X8E"
    details = info["details"]
    assert details["flash_size"] == "512 KiB at 0x00080000"
    assert details["page_size"] == 256
    assert details["gpnvm1"] == "0 (boot from flash)"
    assert details["security"] is False


def test_gpnvm_set_clear_read(driver):
    fake = FakeSam3x()
    attach(driver, fake)
    assert driver.ok("gpnvm set 1")["gpnvm1"] == 1
    assert fake.gpnvm == 0b10
    assert driver.ok("gpnvm read") == {"gpnvm0": 0, "gpnvm1": 1, "gpnvm2": 0}
    assert driver.ok("gpnvm clear 1")["gpnvm1"] == 0
    assert "security bit" in driver.error("gpnvm set 0")
    assert fake.gpnvm == 0


def test_gpnvm_on_samd_is_refused_in_one_line(driver):
    attach(driver, FakeSamd21())
    error = driver.error("gpnvm read")
    assert error.startswith("ATSAMD21G18A has no GPNVM bits") and "\n" not in error


def test_program_refusals_are_one_line(driver, tmp_path):
    attach(driver, FakeSamd21())
    built_for_zero = tmp_path / "klipper.bin"
    built_for_zero.write_bytes(struct.pack("<II", 0x20008000, 0x1A5) + bytes(1000))
    error = driver.error(f"program {built_for_zero} 0x0")
    assert "inside the bootloader" in error and "0x2000" in error and "\n" not in error
    error = driver.error(f"program {built_for_zero}")
    assert "not linked for 0x2000" in error and "`force`" in error and "\n" not in error
    assert driver.ok(f"program {built_for_zero} force verify")["verified"]


class SilentUsb(ScriptedLink):
    def __init__(self, usb_id: str) -> None:
        super().__init__(lambda data: b"")
        self.usb_id = usb_id


def test_a_due_sketch_is_a_session_that_points_to_bootloader():
    found = SamApplication.probe(SilentUsb("2341:003e"), reset=False)
    assert isinstance(found, SamApplication)
    with pytest.raises(Exception, match="use `bootloader`"):
        found.ready()
    assert found.request_warning() is None
    erasing = SamApplication.probe(SilentUsb("2341:003d"), reset=False)
    assert "ERASING ALL OF FLASH" in erasing.request_warning()
    assert SamApplication.probe(SilentUsb("0403:6001"), reset=False) is None


def test_touch_without_modem_lines_says_what_to_do(driver):
    driver.shell.attach(Session(SamApplication(SilentUsb("2341:804d"), "2341:804d", None)))
    error = driver.error("bootloader")
    assert "no modem lines for the 1200-baud touch" in error
    assert "press reset twice quickly" in error
