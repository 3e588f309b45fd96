"""A board running Klipper on a USB serial port, told to reboot, may come back as a USB
bootloader with no serial port at all (ST's DFU on an F4 without Katapult): flashsh
looks for it at the same physical port."""

from __future__ import annotations

import pytest

import flashsh.transports.serial as serial_transport
import flashsh.transports.usb as usb_transport
from flashsh.errors import TransportError
from flashsh.protocols.dfu_wire import Functional
from flashsh.sims.usb_bus import SimUsbBackend, SimUsbBus
from flashsh.sims.usb_device import AltSetting, Identity, SimUsbDevice


class FakePort:
    port = "/dev/ttyACM0"
    timeout = 1.0
    baudrate = 250000

    def close(self) -> None:
        return None


class DfuRom(SimUsbDevice):
    identity = Identity(0x0483, 0xDF11, 0x2200, "STMicroelectronics", "DFU in FS Mode", "1")
    alt_settings = (
        AltSetting(0, 0, 0xFE, 1, 2, "@Internal Flash  /0x08000000/064*0002Kg",
                   extra=Functional(0x0B, 255, 2048, 0x011A).pack()),
    )  # fmt: skip


@pytest.fixture
def klipper_tty(monkeypatch):
    monkeypatch.setattr(serial_transport, "usb_port_info", lambda d: ("1d50:614e", "1-1.3:1.0"))
    monkeypatch.setattr("serial.tools.list_ports.comports", lambda: [])
    return serial_transport.SerialLink(FakePort(), "/dev/ttyACM0")


def test_a_usb_bootloader_at_the_same_port_is_taken(klipper_tty):
    asked = []

    def elsewhere(port: str):
        asked.append(port)
        return "the DFU device" if len(asked) >= 2 else None

    found = serial_transport.reappear(klipper_tty, "1d50:6177", 2.0, elsewhere=elsewhere)
    assert found == "the DFU device"
    assert set(asked) == {"1-1.3"}


def test_nothing_coming_back_names_what_was_awaited(klipper_tty):
    with pytest.raises(TransportError, match="no USB device 1d50:6177 came back"):
        serial_transport.reappear(klipper_tty, "1d50:6177", 0.3, elsewhere=lambda port: None)


def test_bootloader_at_port_opens_only_a_bootloader_at_that_port(monkeypatch):
    bus = SimUsbBus()
    bus.plug(DfuRom(), port="1-1.3")
    monkeypatch.setattr(usb_transport, "load_backend", lambda spec=None: SimUsbBackend(bus))
    link = usb_transport.bootloader_at_port("1-1.3")
    assert link is not None and link.info.usb_id == "0483:df11"
    assert usb_transport.bootloader_at_port("1-1.4") is None


def test_bootloader_at_port_is_quiet_without_usb(monkeypatch):
    def no_backend(spec=None):
        raise TransportError("no libusb 1.0 found for USB access")

    monkeypatch.setattr(usb_transport, "load_backend", no_backend)
    assert usb_transport.bootloader_at_port("1-1.3") is None
