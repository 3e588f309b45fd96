"""The HalfKay simulator behaves like the bootloader, shown with naive hosts: one that
does not retry while HalfKay erases, one that uses byte addresses on the Teensy++ 2.0.
flashsh's own transfers are in test_halfkay.py."""

from __future__ import annotations

import os

import pytest

from flashsh.chips.teensy import teensy_model
from flashsh.errors import ProtocolError
from flashsh.protocols.halfkay import read_report_descriptor, report_descriptor_length, top_usage
from flashsh.sims.halfkay import HalfKaySim
from flashsh.sims.usb_bus import SimUsbBackend, SimUsbBus, make_device
from flashsh.transports.usb import DeviceGone, UsbLink, open_usb


class NaiveHost:
    def __init__(self, url: str) -> None:
        self.bus = SimUsbBus()
        self.device: HalfKaySim = make_device(url)  # type: ignore[assignment]
        self.bus.plug(self.device)
        self.link: UsbLink = open_usb("usb:16c0:0478", backend=SimUsbBackend(self.bus))

    def write(self, header: bytes, block: bytes) -> None:
        self.link.control_out(0x21, 0x09, 0x0200, 0, header + block)


@pytest.mark.parametrize(
    ("model", "usage", "size"), [("teensypp2", 0x1C, 258), ("teensy2", 0x1B, 130)]
)
def test_the_report_descriptor_names_the_board(model, usage, size):
    host = NaiveHost(f"sim://halfkay?model={model}&throttle=0")
    (interface,) = host.link.interfaces()
    assert interface.bInterfaceClass == 3
    descriptor = read_report_descriptor(host.link, interface)
    assert len(descriptor) == report_descriptor_length(interface)
    assert top_usage(descriptor) == (0xFF9C, usage)
    assert teensy_model(model).report_size == size


def test_the_first_block_erases_the_application_flash_but_not_halfkay():
    host = NaiveHost("sim://halfkay?model=teensy2&throttle=0")
    flash = host.device.flash
    assert flash[:10] == b"OLD-SKETCH"
    block = os.urandom(128)
    host.write(bytes([0x00, 0x10]), block)  # byte address 0x1000 first
    host.device.settle()
    assert flash[0x1000:0x1080] == block
    assert flash[:0x1000] == b"\xff" * 0x1000 and flash[0x1080:0x7E00] == b"\xff" * 0x6D80
    assert flash[0x7E00:0x7E08] == b"HALFKAY!"
    assert host.device.erases == 1


def test_a_host_that_does_not_retry_fails_while_halfkay_erases():
    host = NaiveHost("sim://halfkay?model=teensy2&throttle=0")
    host.write(bytes([0, 0]), b"\x01" * 128)
    with pytest.raises(ProtocolError, match="stall"):
        host.write(bytes([0x80, 0]), b"\x02" * 128)
    host.write(bytes([0x80, 0]), b"\x02" * 128)  # the erase is over by now
    assert host.device.stalls == 1
    assert host.device.flash[:256] == b"\x01" * 128 + b"\x02" * 128


def test_the_teensypp2_header_is_a_block_number():
    host = NaiveHost("sim://halfkay?model=teensypp2&throttle=0")
    host.write(bytes([0x00, 0x00]), b"\xaa" * 256)
    host.device.settle()
    host.write(bytes([0xF0, 0x01]), b"\xbb" * 256)  # block 0x01F0 = byte 0x1F000
    assert host.device.flash[0x1F000:0x1F100] == b"\xbb" * 256


def test_a_host_sending_byte_addresses_to_the_teensypp2_writes_elsewhere():
    host = NaiveHost("sim://halfkay?model=teensypp2&throttle=0")
    host.write(bytes([0x00, 0x00]), b"\xaa" * 256)
    host.device.settle()
    host.write(bytes([0x00, 0x01]), b"\xcc" * 256)  # meant 0x0100; HalfKay reads block 0x100
    flash = host.device.flash
    assert flash[0x100:0x200] == b"\xff" * 256
    assert flash[0x10000:0x10100] == b"\xcc" * 256


def test_blocks_over_halfkay_are_ignored():
    host = NaiveHost("sim://halfkay?model=teensy2&throttle=0")
    host.write(bytes([0, 0]), b"\xff" * 128)
    host.device.settle()
    host.write(bytes([0x00, 0x7E]), b"\x00" * 128)
    assert host.device.flash[0x7E00:0x7E08] == b"HALFKAY!"
    assert host.device.ignored == [0x7E00]


def test_a_report_of_the_wrong_length_is_stalled():
    host = NaiveHost("sim://halfkay?model=teensy2&throttle=0")
    with pytest.raises(ProtocolError, match="stall"):
        host.link.control_out(0x21, 0x09, 0x0200, 0, b"\0" + bytes(130))  # report id first
    assert host.device.erases == 0


def test_ff_ff_reboots_and_leaves_the_bus():
    host = NaiveHost("sim://halfkay?model=teensy2&throttle=0")
    host.write(b"\xff\xff", bytes(128))
    assert host.device.reboots == 1 and host.bus.devices() == []
    with pytest.raises(DeviceGone):
        host.write(bytes([0, 0]), bytes(128))


def test_vanish_fault():
    host = NaiveHost("sim://halfkay?model=teensy2&fault=vanish:1&throttle=0")
    with pytest.raises(DeviceGone):
        host.write(bytes([0, 0]), bytes(128))
    assert host.device.erases == 0


def test_usage_option_and_bad_options():
    device = make_device("sim://halfkay?usage=0")
    assert isinstance(device, HalfKaySim) and top_usage(device.report_descriptor)[1] == 0
    with pytest.raises(ValueError, match="valid: teensy1, teensy2"):
        make_device("sim://halfkay?model=teensy41")
    with pytest.raises(ValueError, match="unknown option 'chip'"):
        make_device("sim://halfkay?chip=at90usb1286")
    with pytest.raises(ValueError, match="valid: stall:N, timeout:N, vanish:N$"):
        make_device("sim://halfkay?fault=noack")
