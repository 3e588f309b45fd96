"""flashsh programs Teensys through HalfKay with Session and operations: the board from
the HID usage (or --chip), block 0 first, blank blocks skipped, stalls retried, refusals
with HalfKay's reason, and the reboot whose failing transfer is the success."""

from __future__ import annotations

import os

import pytest

import flashsh.protocols.usb_base as usb_base
from flashsh import operations
from flashsh.errors import (
    ImageError,
    ProtocolError,
    TargetError,
    TransportError,
    UnsupportedError,
)
from flashsh.images import Image
from flashsh.protocols import usb_session_for
from flashsh.session import Session
from flashsh.sims.halfkay import HalfKaySim
from flashsh.sims.usb_bus import SimUsbBackend, SimUsbBus, make_device
from flashsh.transports.usb import open_usb


def connect(url: str, *, chip: str | None = None):
    bus = SimUsbBus()
    device: HalfKaySim = make_device(url)  # type: ignore[assignment]
    bus.plug(device)
    link = open_usb("usb:16c0:0478", backend=SimUsbBackend(bus))
    return bus, device, Session(usb_session_for(link, chip=chip), url)


@pytest.fixture(autouse=True)
def quick_follow(monkeypatch):
    """An AVR sketch has no USB: after a reboot nothing comes back; wait briefly."""
    monkeypatch.setattr(usb_base, "FOLLOW_TIMEOUT", 0.2)


@pytest.mark.parametrize(
    ("model", "title", "block", "code"),
    [
        ("teensypp2", "Teensy++ 2.0 (AT90USB1286)", 256, 0x1FC00),
        ("teensy2", "Teensy 2.0 (ATmega32U4)", 128, 0x7E00),
    ],
)
def test_the_board_comes_from_the_hid_usage(model, title, block, code):
    _, _, session = connect(f"sim://halfkay?model={model}&throttle=0")
    assert session.info.chip == title
    memory = session.memory_map
    assert (memory.flash.page_size, memory.bootloader[0], memory.app_start) == (block, code, 0)
    assert memory.flash.access == "w"


@pytest.mark.parametrize("model", ["teensypp2", "teensy2"])
def test_a_program_lands_whole_and_the_old_one_is_gone(model):
    _, device, session = connect(f"sim://halfkay?model={model}&throttle=0")
    data = os.urandom(3000)
    operations.program(session, Image([(0x400, data)], source="blink.hex"))
    device.settle()
    flash = device.flash
    code = device.model.code_size
    assert flash[0x400 : 0x400 + 3000] == data
    assert flash[:0x400] == b"\xff" * 0x400  # erased, though the image starts above it
    assert flash[0x400 + 3000 : code] == b"\xff" * (code - 0x400 - 3000)
    assert flash[code : code + 8] == b"HALFKAY!"
    assert device.blocks[0] == 0  # block 0 went first, to start the erase
    assert device.erases == 1 and device.ignored == []


def test_blank_blocks_after_the_first_are_skipped():
    _, device, session = connect("sim://halfkay?model=teensy2&throttle=0")
    data = b"\xff" * 128 + os.urandom(128) + b"\xff" * 512 + os.urandom(128)
    operations.program(session, Image([(0, data)], source="sparse.hex"))
    device.settle()
    assert device.blocks == [0, 128, 768]
    assert device.flash[: len(data)] == data


def test_stalls_while_halfkay_erases_are_retried():
    _, device, session = connect("sim://halfkay?model=teensy2&throttle=0")
    data = os.urandom(1024)
    operations.program(session, Image([(0, data)], source="blink.hex"))
    device.settle()
    assert device.stalls == 1  # the second block arrived during the erase
    assert device.flash[:1024] == data


def test_a_stall_fault_is_retried_too():
    _, device, session = connect("sim://halfkay?model=teensy2&fault=stall:4,stall:5&throttle=0")
    data = os.urandom(1024)
    operations.program(session, Image([(0, data)], source="blink.hex"))
    device.settle()
    assert device.flash[:1024] == data


def test_a_device_that_keeps_stalling_gives_up_in_one_line(monkeypatch):
    monkeypatch.setattr("flashsh.protocols.halfkay.ERASE_TIMEOUT", 0.05)
    monkeypatch.setattr("flashsh.protocols.halfkay.WRITE_TIMEOUT", 0.05)
    stalls = ",".join(f"stall:{n}" for n in range(1, 200))
    _, _, session = connect(f"sim://halfkay?model=teensy2&fault={stalls}&throttle=0")
    with pytest.raises(ProtocolError) as caught:
        operations.program(session, Image([(0, os.urandom(256))], source="blink.hex"))
    text = str(caught.value)
    assert "HalfKay refused the block at 0x0000 for" in text and "\n" not in text


def test_usage_0_needs_the_chip():
    with pytest.raises(ProtocolError, match="does not say which Teensy it is") as caught:
        connect("sim://halfkay?usage=0&throttle=0")
    assert "--chip at90usb1286" in str(caught.value)
    _, device, session = connect("sim://halfkay?usage=0&throttle=0", chip="at90usb1286")
    assert session.info.chip == "Teensy++ 2.0 (AT90USB1286)"
    assert "--chip at90usb1286" in session.info.how
    data = os.urandom(512)
    operations.program(session, Image([(0, data)], source="blink.hex"))
    device.settle()
    assert device.flash[:512] == data


def test_a_chip_that_contradicts_the_usage_is_refused():
    with pytest.raises(TargetError, match="says it is a Teensy 2.0"):
        connect("sim://halfkay?model=teensy2&throttle=0", chip="at90usb1286")


def test_an_arm_teensy_is_named_and_refused():
    with pytest.raises(UnsupportedError, match=r"this is a Teensy 4.1 \(IMXRT1062\)"):
        connect("sim://halfkay?usage=0x25&throttle=0")


@pytest.mark.parametrize("what", ["verify", "verify_image", "read", "diff"])
def test_reading_is_refused_with_halfkays_reason(what):
    _, device, session = connect("sim://halfkay?throttle=0")
    image = Image([(0, os.urandom(512))], source="blink.hex")
    with pytest.raises(UnsupportedError) as caught:
        if what == "verify":
            operations.program(session, image, verify=True)
        elif what == "verify_image":
            operations.verify_image(session, image)
        elif what == "read":
            operations.read_memory(session, session.memory_map.flash, 0, 256)
        else:
            operations.program(session, image, diff=True)
    assert "HalfKay has no read command: it can only write and reboot" in str(caught.value)
    assert device.reports == 0 and device.erases == 0


def test_eeprom_and_fuses_are_refused():
    _, _, session = connect("sim://halfkay?throttle=0")
    with pytest.raises(TargetError, match="no memory region 'eeprom'"):
        session.memory_map.region("eeprom")
    with pytest.raises(UnsupportedError, match="no fuse or lock commands"):
        session.bootloader.read_fuses()


def test_an_image_over_halfkay_is_refused_before_anything_is_sent():
    _, device, session = connect("sim://halfkay?throttle=0")
    image = Image([(0x1F000, os.urandom(0x1000))], source="with_bootloader.hex")
    with pytest.raises(ImageError, match=r"inside the bootloader \(0x0001fc00-0x0001ffff\)"):
        operations.program(session, image)
    assert device.reports == 0


def test_a_second_program_in_the_same_halfkay_run_is_refused():
    _, device, session = connect("sim://halfkay?model=teensy2&throttle=0")
    image = Image([(0, os.urandom(512))], source="blink.hex")
    operations.program(session, image)
    reports = device.reports
    with pytest.raises(UnsupportedError, match="erases the flash only on the first write"):
        operations.program(session, image)
    assert device.reports == reports


def test_mass_erase_then_program():
    _, device, session = connect("sim://halfkay?model=teensy2&throttle=0")
    result = operations.erase(session)
    assert result["method"] == "chip erase"
    device.settle()
    assert device.flash[:0x7E00] == b"\xff" * 0x7E00
    data = os.urandom(256)
    operations.program(session, Image([(0x100, data)], source="blink.hex"))
    device.settle()
    assert device.flash[0x100:0x200] == data and device.erases == 1


def test_erasing_a_range_means_the_whole_application_flash():
    _, device, session = connect("sim://halfkay?model=teensy2&throttle=0")
    assert operations.erase_bounds(session, 0x1000, 0x80) == (0, 0x7E00)
    operations.erase(session, 0x1000, 0x80)
    device.settle()
    assert device.flash[:0x7E00] == b"\xff" * 0x7E00 and device.blocks == [0]


def test_the_device_vanishing_mid_transfer_is_one_line_naming_what_was_sent():
    _, _, session = connect("sim://halfkay?model=teensy2&fault=vanish:4&throttle=0")
    with pytest.raises(TransportError) as caught:
        operations.program(session, Image([(0, os.urandom(1024))], source="blink.hex"))
    text = str(caught.value)
    assert "\n" not in text
    assert "writing 0x0100 failed" in text and "the block at 0x0100" in text
    assert "written before that: 0x0000-0x00ff" in text


def test_reset_reboots_and_the_board_leaving_is_the_success():
    bus, device, session = connect("sim://halfkay?model=teensy2&throttle=0")
    operations.program(session, Image([(0, os.urandom(256))], source="blink.hex"))
    session.start_application()
    assert device.reboots == 1 and bus.devices() == []
    assert session.in_bootloader is False


def test_reset_whose_transfer_fails_as_the_board_leaves_is_still_a_success():
    # Reports: block 0, block 0x80 (stalled once during the erase, then taken), reboot.
    _, device, session = connect("sim://halfkay?model=teensy2&fault=vanish:4&throttle=0")
    operations.program(session, Image([(0, os.urandom(256))], source="blink.hex"))
    session.start_application()
    assert device.reports == 4 and session.in_bootloader is False
