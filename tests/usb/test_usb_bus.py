"""The simulated USB bus seen through pyusb and flashsh's USB transport: descriptors,
strings, errors as libusb gives them, and a device that re-enumerates."""

from __future__ import annotations

import pytest

from flashsh.errors import ProtocolError, TransportError
from flashsh.protocols.dfu_wire import (
    DfuRequests,
    Functional,
    dfu_interfaces,
    functional_descriptor,
)
from flashsh.sims.usb_bus import SimUsbBackend, SimUsbBus
from flashsh.sims.usb_device import AltSetting, Identity, SimUsbDevice
from flashsh.transports.usb import DeviceGone, Selector, list_devices, open_usb


class TinyDfu(SimUsbDevice):
    identity = Identity(0x0483, 0xDF11, 0x2200, "STMicroelectronics", "DFU in FS Mode", "3677")
    alt_settings = (
        AltSetting(0, 0, 0xFE, 1, 2, "@Internal Flash  /0x08000000/04*016Kg",
                   extra=Functional(0x0B, 255, 2048, 0x011A).pack()),
        AltSetting(0, 1, 0xFE, 1, 2, "@Option Bytes  /0x1FFFC000/01*016 e"),
    )  # fmt: skip

    def control(self, setup, data):
        if setup.request == 3:
            return bytes([0, 0, 0, 0, 2, 0])
        return super().control(setup, data)


@pytest.fixture
def bus():
    return SimUsbBus()


def test_listing_names_the_device_and_its_target(bus):
    bus.plug(TinyDfu())
    (found,) = list_devices(SimUsbBackend(bus))
    assert found.as_dict()["target"] == "usb:0483:df11:3677"
    assert found.kind == "dfuse" and found.port == "1-1" and found.product == "DFU in FS Mode"


def test_descriptors_and_requests_go_through_pyusb(bus):
    bus.plug(TinyDfu())
    link = open_usb("usb:0483:df11", backend=SimUsbBackend(bus))
    assert functional_descriptor(link) == Functional(0x0B, 255, 2048, 0x011A)
    assert [a for _, a, _ in dfu_interfaces(link)] == [0, 1]
    assert dfu_interfaces(link)[1][2] == "@Option Bytes  /0x1FFFC000/01*016 e"
    link.claim(0, 1)
    assert link.info.device and DfuRequests(link).get_status().state == 2
    with pytest.raises(ProtocolError, match="stall"):
        DfuRequests(link).abort()


def test_access_denied_names_the_udev_rule(bus):
    device = TinyDfu()
    device.deny_access = True
    bus.plug(device)
    with pytest.raises(TransportError, match="permission denied") as caught:
        open_usb("usb", backend=SimUsbBackend(bus))
    assert 'ATTR{idVendor}=="0483"' in str(caught.value)


def test_a_busy_interface_says_who_might_hold_it(bus):
    device = TinyDfu()
    device.busy = True
    bus.plug(device)
    link = open_usb("usb", backend=SimUsbBackend(bus))
    with pytest.raises(TransportError, match="busy"):
        link.claim(0)


def test_two_matches_are_refused_with_both_names(bus):
    bus.plug(TinyDfu())
    bus.plug(TinyDfu())
    with pytest.raises(TransportError, match="2 USB bootloaders match usb") as caught:
        open_usb("usb", backend=SimUsbBackend(bus))
    assert "1-1" in str(caught.value) and "1-2" in str(caught.value)


def test_nothing_plugged_in_says_how_to_enter_the_bootloader(bus):
    with pytest.raises(TransportError, match="no USB bootloader matches usb:1eaf:0003"):
        open_usb("usb:1eaf:0003", backend=SimUsbBackend(bus))


def test_a_vanished_device_is_reported_gone_and_followed_back(bus):
    device = TinyDfu()
    bus.plug(device)
    link = open_usb("usb", backend=SimUsbBackend(bus))
    old_address = link.info.address
    device.reenumerate(after=0.05)
    with pytest.raises(DeviceGone):
        DfuRequests(link).get_status()
    found = link.follow(lambda info: info.kind == "dfuse", 2.0, "DFU device")
    assert found.port == "1-1" and found.address != old_address
    link.reopen(found)
    assert DfuRequests(link).get_status().state == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("usb", Selector()),
        ("usb:0483:DF11", Selector(0x0483, 0xDF11)),
        ("usb:1eaf:0003:LLM 003", Selector(0x1EAF, 0x0003, "LLM 003")),
        ("usb:1-1.3", Selector(port="1-1.3")),
    ],
)
def test_target_forms(text, expected):
    assert Selector.parse(text) == expected


@pytest.mark.parametrize("text", ["usb:0483", "usb:xyz:0003", "usb:0483:df11:a:b"])
def test_bad_target_forms_are_refused(text):
    with pytest.raises(Exception, match="not a USB target"):
        Selector.parse(text)
