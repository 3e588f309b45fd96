"""flashsh programs the STM32 HID bootloader through Session and operations: every build,
gaps, the 2 KiB rule, refusals before anything is sent, faults as one-line errors, and
the board followed after REBOOT_MCU."""

from __future__ import annotations

import os
import struct

import pytest

import flashsh.protocols.usb_base as usb_base
from flashsh import operations
from flashsh.errors import (
    ImageError,
    NoAnswerError,
    ProtocolError,
    TargetError,
    TransportError,
    UnsupportedError,
)
from flashsh.images import Image
from flashsh.protocols import usb_session_for
from flashsh.protocols.hid_bootloader import HidBootloader
from flashsh.session import Session
from flashsh.sims.hid_bootloader import HidBootloaderSim
from flashsh.sims.usb_bus import SimUsbBackend, SimUsbBus, make_device
from flashsh.transports.usb import open_usb

F1_START, F4_START = 0x08000800, 0x08004000


def connect(url: str, *, chip: str | None = None, backend=None):
    bus = SimUsbBus()
    device: HidBootloaderSim = make_device(url)  # type: ignore[assignment]
    bus.plug(device)
    link = open_usb("usb:1209:beba", backend=backend or SimUsbBackend(bus))
    return bus, device, Session(usb_session_for(link, chip=chip), url)


def firmware(start: int, size: int, *, handler: int | None = None) -> bytes:
    """A vector table linked for ``start`` (or with the reset handler given), then data."""
    vectors = struct.pack("<II", 0x20005000, (handler or start + 0x131) | 1)
    return vectors + os.urandom(size - 8)


@pytest.fixture
def quick_follow(monkeypatch):
    """A board that leaves the bus for good is waited for briefly."""
    monkeypatch.setattr(usb_base, "FOLLOW_TIMEOUT", 0.3)


@pytest.mark.parametrize(
    ("url", "start"),
    [
        ("sim://hid?throttle=0", F1_START),
        ("sim://hid?build=f1hd&throttle=0", F1_START),
        ("sim://hid?build=f1hd&variant=upstream&throttle=0", F1_START),
        ("sim://hid?build=f4&throttle=0", F4_START),
        ("sim://hid?build=f4&variant=upstream&throttle=0", F4_START),
        ("sim://hid?build=f4&outep=interrupt&throttle=0", F4_START),
    ],
)
def test_every_build_takes_the_image(url, start):
    _, device, session = connect(url)
    data = firmware(start, 5 * 1024 + 300)
    result = operations.program(session, Image([(start, data)], source="klipper.bin"))
    assert device.image(len(data)) == data
    assert device.image(6 * 1024)[len(data) :] == b"\xff" * (6 * 1024 - len(data))
    assert device.commands == ["RESET_PAGES"]
    assert result["pages_written"] == 6 and result["verified"] is False
    assert device.acks_lost == 0 and device.reports_lost == 0


def test_the_application_start_and_the_bootloader_are_in_the_memory_map():
    _, device, session = connect("sim://hid?throttle=0")
    memory = session.memory_map
    assert (memory.app_start, memory.bootloader, memory.app_start_fixed) == (
        F1_START,
        (0x08000000, F1_START),
        True,
    )
    assert memory.flash.access == "w" and memory.flash.size == 64 * 1024
    _, _, session = connect("sim://hid?build=f4&throttle=0")
    assert session.memory_map.app_start == F4_START


def test_a_gap_in_the_image_goes_as_0xff_because_the_device_writes_in_sequence():
    _, device, session = connect("sim://hid?build=f4&throttle=0")
    head, tail = firmware(F4_START, 1024), os.urandom(700)
    image = Image([(F4_START, head), (F4_START + 5 * 1024, tail)], source="gappy.hex")
    operations.program(session, image)
    assert device.image(1024) == head
    assert device.image(5 * 1024)[1024:] == b"\xff" * 4096
    assert device.image(5 * 1024 + 700)[5 * 1024 :] == tail


@pytest.mark.parametrize(
    ("url", "chip", "reports"),
    [
        # 3 KiB on 2 KiB pages: one more KiB completes the last page.
        ("sim://hid?build=f1hd&throttle=0", None, 1 + 4 * 16),
        # Upstream's 2 KiB-page builds acknowledge with 0x02: the size is not known, so
        # an F1 transfer always ends on 2 KiB.
        ("sim://hid?build=f1hd&variant=upstream&throttle=0", None, 1 + 4 * 16),
        ("sim://hid?throttle=0", None, 1 + 4 * 16),
        # A part known to have 1 KiB pages is spared the extra KiB.
        ("sim://hid?throttle=0", "stm32f103c8", 1 + 3 * 16),
        ("sim://hid?build=f4&throttle=0", None, 1 + 3 * 16),
    ],
)
def test_the_last_2k_page_is_completed_where_it_has_to_be(url, chip, reports):
    _, device, session = connect(url, chip=chip)
    start = session.memory_map.app_start
    data = firmware(start, 3 * 1024)
    operations.program(session, Image([(start, data)], source="klipper.bin"))
    assert device.image(len(data)) == data
    assert device.reports == reports


def test_verify_is_refused_with_the_reason_before_anything_is_sent():
    _, device, session = connect("sim://hid?throttle=0")
    image = Image([(F1_START, firmware(F1_START, 2048))], source="klipper.bin")
    with pytest.raises(UnsupportedError) as caught:
        operations.program(session, image, verify=True)
    assert "has no read command" in str(caught.value)
    assert device.reports == 0


@pytest.mark.parametrize("what", ["verify_image", "read", "diff"])
def test_reading_commands_are_refused_with_the_reason(what):
    _, device, session = connect("sim://hid?throttle=0")
    image = Image([(F1_START, firmware(F1_START, 2048))], source="klipper.bin")
    with pytest.raises(UnsupportedError) as caught:
        if what == "verify_image":
            operations.verify_image(session, image)
        elif what == "read":
            operations.read_memory(session, session.memory_map.flash, F1_START, 256)
        else:
            operations.program(session, image, diff=True)
    text = str(caught.value)
    assert "flashsh checks every chunk was acknowledged" in text and "\n" not in text
    assert device.reports == 0


def test_an_image_for_another_start_is_refused_naming_both():
    _, device, session = connect("sim://hid?throttle=0")
    image = Image([(0x08002000, firmware(0x08002000, 2048))], source="klipper.hex")
    with pytest.raises(ImageError) as caught:
        operations.program(session, image)
    text = str(caught.value)
    assert "starts at 0x08002000" in text and "0x08000800" in text and "\n" not in text
    assert "stm32duino (Maple)" in text
    assert device.reports == 0


def test_a_bin_linked_for_the_maple_bootloader_is_recognised():
    _, device, session = connect("sim://hid?throttle=0")
    # Shorter than the 6 KiB between the two starts: its reset handler lies beyond it.
    data = firmware(F1_START, 4096, handler=0x08002131)
    with pytest.raises(ImageError) as caught:
        operations.program(session, Image([(F1_START, data)], source="klipper.bin"))
    assert "is not linked for 0x08000800" in str(caught.value)
    assert "linked for 0x08002000 (the stm32duino (Maple) bootloader" in str(caught.value)
    assert device.reports == 0
    operations.program(session, Image([(F1_START, data)], source="klipper.bin"), force=True)
    assert device.image(len(data)) == data


def test_an_image_without_a_vector_table_is_refused():
    _, _, session = connect("sim://hid?throttle=0")
    with pytest.raises(ImageError, match="initial stack pointer 0xffffffff is not in SRAM"):
        operations.program(session, Image([(F1_START, b"\xff" * 64)], source="blank.bin"))


def test_an_image_over_the_bootloader_is_refused():
    _, device, session = connect("sim://hid?throttle=0")
    image = Image([(0x08000000, firmware(0x08000000, 4096))], source="with_bootloader.hex")
    with pytest.raises(ImageError, match=r"inside the bootloader \(0x08000000-0x080007ff\)"):
        operations.program(session, image)
    assert device.reports == 0 and bytes(device.flash[:8]) == b"HIDBOOT!"


def test_an_image_too_large_for_the_assumed_flash_says_to_give_the_chip():
    _, _, session = connect("sim://hid?build=f1hd&throttle=0")
    data = firmware(F1_START, 100 * 1024)
    with pytest.raises(ImageError, match="--chip") as caught:
        operations.program(session, Image([(F1_START, data)], source="marlin.bin"))
    assert "flashsh assumes 64 KiB (STM32F103C8)" in str(caught.value)
    _, device, session = connect("sim://hid?build=f1hd&throttle=0", chip="stm32f103rc")
    operations.program(session, Image([(F1_START, data)], source="marlin.bin"))
    assert device.image(len(data)) == data
    assert session.info.chip == "STM32F103RC"


def test_a_chip_of_the_other_family_is_refused():
    with pytest.raises(TargetError, match="is an STM32F4, but this HID bootloader is an F1"):
        connect("sim://hid?throttle=0", chip="stm32f407vg")


def test_a_bootloader_older_than_3_00_is_refused_like_hid_flash_does():
    with pytest.raises(ProtocolError, match="update the bootloader to v3.00 or later"):
        connect("sim://hid?version=0x0200&throttle=0")


def test_the_kernel_hid_driver_is_detached_before_use():
    bus = SimUsbBus()
    bus.plug(make_device("sim://hid?throttle=0"))
    detached = []

    class KernelBound(SimUsbBackend):
        def is_kernel_driver_active(self, dev_handle, intf):
            return intf not in detached

        def detach_kernel_driver(self, dev_handle, intf):
            detached.append(intf)

    link = open_usb("usb:1209:beba", backend=KernelBound(bus))
    usb_session_for(link)
    assert detached == [0]


def test_the_device_vanishing_mid_transfer_is_one_line_naming_what_was_sent():
    _, _, session = connect("sim://hid?fault=vanish:20&throttle=0")
    image = Image([(F1_START, firmware(F1_START, 4096))], source="klipper.bin")
    with pytest.raises(TransportError) as caught:
        operations.program(session, image)
    text = str(caught.value)
    assert "\n" not in text
    assert "report 3 of 16 of the KiB at 0x08000c00" in text
    assert "written before that: 0x08000800-0x08000bff" in text


def test_a_silent_device_is_a_one_line_error_not_a_hang():
    _, device, session = connect("sim://hid?fault=noack:3&throttle=0")
    image = Image([(F1_START, firmware(F1_START, 4096))], source="klipper.bin")
    with pytest.raises(NoAnswerError) as caught:
        operations.program(session, image)
    text = str(caught.value)
    assert "did not acknowledge the KiB at 0x08000c00 within 5 s" in text and "\n" not in text
    assert device.written == [0x08000800, 0x08000C00]


def test_after_a_broken_transfer_the_next_program_starts_over_cleanly():
    _, device, session = connect("sim://hid?fault=stall:10&throttle=0")
    data = firmware(F1_START, 3000)
    image = Image([(F1_START, data)], source="klipper.bin")
    with pytest.raises(ProtocolError, match="stall"):
        operations.program(session, image)
    resets = device.traffic.resets
    operations.program(session, image)
    assert device.traffic.resets == resets + 1  # the F1's page counter back at the start
    assert device.image(len(data)) == data


def test_erasing_part_of_flash_rewrites_from_the_application_start():
    _, device, session = connect("sim://hid?throttle=0")
    first, end = operations.erase_bounds(session, 0x08002000, 0x100)
    assert (first, end) == (F1_START, 0x08002400)
    device.flash[0x800:0x2400] = b"\x55" * 0x1C00
    operations.erase(session, 0x08002000, 0x100)
    assert device.image(0x1C00) == b"\xff" * 0x1C00


def test_erasing_into_the_bootloader_is_refused():
    _, _, session = connect("sim://hid?throttle=0")
    with pytest.raises(TargetError, match="overlaps the bootloader"):
        operations.erase_bounds(session, 0x08000400, 0x800)


def test_reset_sends_reboot_and_follows_klipper_back():
    bus, device, session = connect("sim://hid?app=klipper&throttle=0")
    data = firmware(F1_START, 2048)
    operations.program(session, Image([(F1_START, data)], source="klipper.bin"))
    session.start_application()
    assert device.commands == ["RESET_PAGES", "REBOOT_MCU"]
    assert session.info.protocol == "usb-application"
    assert session.bootloader.link.info.usb_id == "1d50:614e"
    bus.wait_idle()


def test_reset_without_an_application_comes_back_to_the_bootloader():
    bus, device, session = connect("sim://hid?throttle=0")
    first = session.bootloader
    session.start_application()
    assert device.reboots == 1
    assert isinstance(session.bootloader, HidBootloader) and session.bootloader is not first
    assert session.info.protocol == "hid"


def test_reset_of_a_board_whose_application_has_no_usb_keeps_the_session(quick_follow):
    _, device, session = connect("sim://hid?build=f4&throttle=0")
    operations.program(session, Image([(F4_START, firmware(F4_START, 1024))], source="a.bin"))
    first = session.bootloader
    session.start_application()
    assert device.reboots == 1 and session.bootloader is first
    assert session.in_bootloader is False


def test_reset_in_the_middle_of_a_page_realigns_the_f1_first():
    _, device, session = connect("sim://hid?build=f1hd&throttle=0")
    bootloader = session.bootloader
    flash = session.memory_map.flash
    bootloader.write_page(flash, F1_START, firmware(F1_START, 1024))  # half a page
    assert device.offset == 1024
    session.start_application()
    assert device.commands == ["RESET_PAGES", "REBOOT_MCU"]


def test_info_says_what_is_known_and_what_is_assumed():
    _, _, session = connect("sim://hid?throttle=0")
    info = session.info
    assert info.bootloader == "STM32 HID bootloader v3.00 (F1 build)"
    assert info.details["reports"] == "SET_REPORT on EP0"
    assert "assumed" in str(info.details["flash_size"])
    _, _, session = connect("sim://hid?build=f4&outep=interrupt&throttle=0")
    assert session.info.details["reports"] == "interrupt OUT 0x01"


def test_a_klipper_build_for_the_other_family_is_refused(monkeypatch):
    from flashsh.images import klipper_dict

    _, _, session = connect("sim://hid?throttle=0")
    monkeypatch.setattr(
        "flashsh.protocols.hid_bootloader.klipper_build",
        lambda image: klipper_dict.KlipperBuild("v0.12.0", "stm32f407xx"),
    )
    image = Image([(F1_START, firmware(F1_START, 1024))], source="klipper.bin")
    with pytest.raises(ImageError, match="built for stm32f407xx, but this HID bootloader"):
        operations.program(session, image)
