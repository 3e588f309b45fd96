"""The HID bootloader simulator behaves like the firmware, shown with naive hosts: one that
does not pad its last KiB, one that ignores the 0x03 acknowledgement, one that does not
wait for acknowledgements. Each loses data on the simulated board the way it would on a
real one; flashsh's own transfers are in test_hid_bootloader.py."""

from __future__ import annotations

import os
import struct

import pytest

from flashsh.errors import NoAnswerError, ProtocolError
from flashsh.sims.hid_bootloader import HidBootloaderSim, UsbFaults
from flashsh.sims.usb_bus import SimUsbBackend, SimUsbBus, make_device
from flashsh.transports.usb import DeviceGone, UsbLink, open_usb

RESET = b"BTLDCMD\x00".ljust(64, b"\0")
REBOOT = b"BTLDCMD\x01".ljust(64, b"\0")


class NaiveHost:
    """Raw HID traffic, as a careless tool would send it."""

    def __init__(self, url: str) -> None:
        self.bus = SimUsbBus()
        self.device: HidBootloaderSim = make_device(url)  # type: ignore[assignment]
        self.bus.plug(self.device)
        self.link: UsbLink = open_usb("usb:1209:beba", backend=SimUsbBackend(self.bus))
        self.link.claim(0)

    def report(self, data: bytes) -> None:
        self.link.control_out(0x21, 0x09, 0x0200, 0, data)

    def ack(self) -> bytes | None:
        try:
            return self.link.interrupt_read(0x81, 8, 1000)
        except NoAnswerError:
            return None

    def send(self, data: bytes) -> None:
        for at in range(0, len(data), 64):
            self.report(data[at : at + 64])


def image(size: int) -> bytes:
    """A vector table (SP in SRAM) and random bytes."""
    return struct.pack("<II", 0x20005000, 0x08000901) + os.urandom(size - 8)


def test_f1_serves_its_descriptors():
    host = NaiveHost("sim://hid?throttle=0")
    device = host.link.device
    assert (device.bcdUSB, device.bMaxPacketSize0, device.bcdDevice) == (0x0110, 8, 0x0300)
    (interface,) = host.link.interfaces()
    assert [e.bEndpointAddress for e in interface] == [0x81]  # no OUT endpoint
    descriptor = host.link.control_in(0x81, 6, 0x2200, 0, 64)
    assert descriptor[:3] == bytes([0x06, 0x00, 0xFF]) and len(descriptor) == 32
    assert host.link.info.product == "STM32F HID Bootloader" and host.link.info.serial is None


def test_f4_declares_its_out_endpoint_isochronous():
    host = NaiveHost("sim://hid?build=f4&throttle=0")
    (interface,) = host.link.interfaces()
    kinds = {e.bEndpointAddress: e.bmAttributes & 3 for e in interface}
    assert kinds == {0x81: 3, 0x01: 1}
    interrupt = NaiveHost("sim://hid?build=f4&outep=interrupt&throttle=0")
    (interface,) = interrupt.link.interfaces()
    assert {e.bEndpointAddress: e.bmAttributes & 3 for e in interface}[0x01] == 3


def test_f1_acknowledges_reset_pages_and_each_kib():
    host = NaiveHost("sim://hid?throttle=0")
    host.report(RESET)
    assert host.ack() == b"BTLDCMD\x02"
    host.send(image(1024))
    assert host.ack() == b"BTLDCMD\x02"
    assert host.ack() is None


def test_f4_does_not_acknowledge_reset_pages():
    host = NaiveHost("sim://hid?build=f4&throttle=0")
    host.report(RESET)
    assert host.ack() is None
    host.send(image(1024))
    assert host.ack() == b"BTLDCMD\x02"


def test_fork_f1_with_2k_pages_acknowledges_every_kib_with_03():
    host = NaiveHost("sim://hid?build=f1hd&throttle=0")
    host.report(RESET)
    assert host.ack() == b"BTLDCMD\x03"
    host.send(image(1024))
    assert host.ack() == b"BTLDCMD\x03"  # the middle of the page: nothing written yet
    assert host.device.written == []
    host.send(image(1024))
    assert host.ack() == b"BTLDCMD\x03"
    assert host.device.written == [0x08000800]


def test_a_host_that_does_not_pad_the_last_kib_loses_it_on_f1():
    host = NaiveHost("sim://hid?throttle=0")
    data = image(1536)
    host.report(RESET)
    host.ack()
    host.send(data)  # 24 reports: the second page never fills
    host.report(REBOOT)  # at page offset 512: taken for data
    device = host.device
    assert device.image(1024) == data[:1024]
    assert device.image(1536)[1024:] == b"\xff" * 512
    assert device.commands == ["RESET_PAGES"] and device.reboots == 0


def test_a_host_that_ignores_03_loses_the_last_half_page():
    host = NaiveHost("sim://hid?build=f1hd&throttle=0")
    data = image(3072)
    host.report(RESET)
    host.ack()
    for at in range(0, len(data), 1024):
        host.send(data[at : at + 1024])
        assert host.ack() == b"BTLDCMD\x03"
    host.report(REBOOT)  # in the middle of the second 2 KiB page: data again
    device = host.device
    assert device.image(2048) == data[:2048]
    assert device.image(3072)[2048:] == b"\xff" * 1024
    assert device.reboots == 0


def test_upstream_2k_page_build_says_02_and_loses_the_half_page_too():
    host = NaiveHost("sim://hid?build=f1hd&variant=upstream&throttle=0")
    host.report(RESET)
    assert host.ack() == b"BTLDCMD\x02"
    data = image(1024)
    host.send(data)
    host.ack()
    host.report(REBOOT)
    assert host.device.image(1024) == b"\xff" * 1024


def test_f1_reads_a_command_only_at_the_start_of_a_page():
    host = NaiveHost("sim://hid?throttle=0")
    host.report(RESET)
    host.ack()
    host.send(image(512))
    host.report(RESET)  # page offset 512: data
    host.send(b"\x11" * 448)
    assert host.ack() == b"BTLDCMD\x02"
    written = host.device.image(1024)
    assert written[512:576] == RESET and written[576:] == b"\x11" * 448
    assert host.device.commands == ["RESET_PAGES"]


@pytest.mark.parametrize(("variant", "restarted"), [("upstream", True), ("fork", False)])
def test_f4_command_detection_differs_between_upstream_and_fork(variant, restarted):
    host = NaiveHost(f"sim://hid?build=f4&variant={variant}&throttle=0")
    host.report(RESET)
    host.send(b"\x22" * 512)
    host.report(RESET)
    assert (host.device.commands == ["RESET_PAGES", "RESET_PAGES"]) is restarted
    assert host.device.offset == (0 if restarted else 576)


def test_a_host_that_does_not_wait_for_acks_loses_reports_on_f4():
    host = NaiveHost("sim://hid?build=f4&throttle=0")
    data = image(4096)
    host.report(RESET)
    host.send(data)  # the board is erasing sector 1 while the next KiB arrives
    device = host.device
    assert device.reports_lost > 0
    assert device.image(4096) != data


def test_writes_go_in_sequence_and_erase_the_pages_they_fill():
    host = NaiveHost("sim://hid?throttle=0")
    before = host.device.elapsed
    host.report(RESET)
    host.ack()
    for _ in range(3):
        host.send(image(1024))
        host.ack()
    device = host.device
    assert device.written == [0x08000800, 0x08000C00, 0x08001000]
    assert device.erased == device.written
    # Three page erases (20 ms typical) and 3 x 512 half-words (52.5 us) at least.
    assert device.elapsed - before >= 3 * (0.020 + 512 * 52.5e-6)


def test_the_f4_erases_each_sector_once_as_the_write_reaches_it():
    host = NaiveHost("sim://hid?build=f4&throttle=0")
    host.report(RESET)
    for _ in range(20):
        host.send(image(1024))
        assert host.ack() == b"BTLDCMD\x02"
    assert host.device.erased == [0x08004000, 0x08008000]


def test_a_usb_reset_puts_the_f1_back_at_the_application_start():
    host = NaiveHost("sim://hid?throttle=0")
    host.report(RESET)
    host.ack()
    host.send(image(512))
    assert host.device.offset == 512
    host.link.reset()
    assert (host.device.page, host.device.offset) == (2, 0)


def test_reboot_without_a_valid_application_comes_back_as_the_bootloader():
    host = NaiveHost("sim://hid?throttle=0")
    host.report(REBOOT)
    host.bus.wait_idle()
    assert host.device.reboots == 1
    assert [a.device for a in host.bus.devices()] == [host.device]


def test_reboot_with_a_valid_application_leaves_the_bus():
    host = NaiveHost("sim://hid?throttle=0")
    host.report(RESET)
    host.ack()
    host.send(image(1024))
    host.ack()
    host.report(REBOOT)
    host.bus.wait_idle()
    assert host.bus.devices() == []


def test_reboot_into_klipper_comes_back_as_klipper_on_usb():
    host = NaiveHost("sim://hid?app=klipper&throttle=0")
    host.report(RESET)
    host.ack()
    host.send(image(1024))
    host.ack()
    host.report(REBOOT)
    host.bus.wait_idle()
    (back,) = host.bus.devices()
    assert (back.device.identity.vid, back.device.identity.pid) == (0x1D50, 0x614E)
    assert back.port == "1-1"


def test_faults_at_numbered_reports():
    host = NaiveHost("sim://hid?fault=stall:2,vanish:4&throttle=0")
    host.report(RESET)
    with pytest.raises(ProtocolError, match="stall"):
        host.report(b"\0" * 64)
    host.report(b"\0" * 64)
    with pytest.raises(DeviceGone, match="gone"):
        host.report(b"\0" * 64)
    assert host.bus.devices() == []


def test_noack_stops_acknowledging():
    host = NaiveHost("sim://hid?fault=noack:2&throttle=0")
    host.report(RESET)
    assert host.ack() == b"BTLDCMD\x02"
    host.send(image(1024))
    assert host.ack() is None
    assert host.device.written == [0x08000800]  # still writes


def test_the_bootloader_is_never_overwritten_by_the_sim_itself():
    device = make_device("sim://hid?throttle=0")
    assert bytes(device.flash[:8]) == b"HIDBOOT!"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sim://hid?bogus=1", "unknown option 'bogus'"),
        ("sim://hid?build=f2", "f1, f1hd or f4"),
        ("sim://hid?chip=stm32f103rc&build=f1", "needs build=f1hd"),
        ("sim://hid?chip=stm32g0b1re", "F1 and F4"),
        ("sim://hid?fault=drop:3", "valid: stall:N"),
        ("sim://hid?app=marlin", "none or klipper"),
    ],
)
def test_bad_options_are_refused(url, message):
    with pytest.raises(ValueError, match=message):
        make_device(url)


def test_chip_picks_the_build_and_the_flash_size():
    device = make_device("sim://hid?chip=stm32f103rc&throttle=0")
    assert isinstance(device, HidBootloaderSim)
    assert (device.family, device.page_size, len(device.flash)) == ("f1", 2048, 256 * 1024)
    assert make_device("sim://hid?chip=stm32f401cc").family == "f4"


def test_fault_parser_counts_from_one():
    faults = UsbFaults.parse(["stall:1,timeout:2", "noack"])
    assert faults.stall == {1} and faults.timeout == {2} and faults.noack_from == 1
    with pytest.raises(ValueError, match="counts start at 1"):
        UsbFaults.parse(["vanish:0"])
