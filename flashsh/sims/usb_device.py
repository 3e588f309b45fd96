"""What a simulated USB device is: descriptors, strings, control requests, endpoints.

A simulated bootloader subclasses :class:`SimUsbDevice` and answers class and vendor
requests in :meth:`SimUsbDevice.control`; the standard requests a host sends through
pyusb (string descriptors, configuration, alternate settings) are handled here. The
device lives on a :class:`flashsh.sims.usb_bus.SimUsbBus`, which a pyusb backend serves,
so flashsh's real USB code, descriptor parsing included, runs against it.
"""

from __future__ import annotations

import struct
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flashsh.sims.usb_bus import Attachment, SimUsbBus

#: Full-speed USB: 12 Mbit/s, 1 ms frames. Control transfers move 64-byte packets; a
#: frame carries at most this many of them in practice (setup, data and status packets
#: included) once bit stuffing, token overhead and the reserve for other traffic are
#: paid. 19 packets of 64 bytes would fill a frame with nothing else on the bus.
PACKETS_PER_FRAME = 13
FRAME_S = 0.001

REQUEST_GET_DESCRIPTOR = 6
DESCRIPTOR_STRING = 3


class Stall(Exception):
    """The device answers a request with STALL (libusb: LIBUSB_ERROR_PIPE)."""


class Gone(Exception):
    """The device is no longer on the bus (libusb: LIBUSB_ERROR_NO_DEVICE)."""


class Silent(Exception):
    """The device does not answer at all (libusb: LIBUSB_ERROR_TIMEOUT)."""


@dataclass(frozen=True)
class Endpoint:
    address: int  # 0x81 = IN 1, 0x01 = OUT 1
    attributes: int = 3  # 2 bulk, 3 interrupt
    max_packet: int = 64
    interval: int = 1


@dataclass(frozen=True)
class AltSetting:
    """One interface descriptor (one alternate setting of one interface)."""

    interface: int
    alt: int
    cls: int
    subclass: int
    protocol: int
    name: str | None = None
    endpoints: tuple[Endpoint, ...] = ()
    #: Class-specific descriptors that follow this interface descriptor (HID, DFU).
    extra: bytes = b""


@dataclass(frozen=True)
class Identity:
    vid: int
    pid: int
    bcd_device: int = 0x0200
    manufacturer: str | None = None
    product: str | None = None
    serial: str | None = None
    bcd_usb: int = 0x0200
    device_class: int = 0
    device_subclass: int = 0
    device_protocol: int = 0
    max_packet0: int = 64


@dataclass
class Setup:
    request_type: int
    request: int
    value: int
    index: int
    length: int
    #: How long the host waits for the transfer (0: not said); a device that cannot
    #: answer in time leaves the host with a timeout.
    timeout_ms: int = 0

    @property
    def device_to_host(self) -> bool:
        return bool(self.request_type & 0x80)

    @property
    def kind(self) -> int:
        """0 standard, 1 class, 2 vendor."""
        return (self.request_type >> 5) & 3


@dataclass
class Traffic:
    """Counts a test or benchmark reads."""

    control: int = 0
    control_bytes: int = 0
    interrupt_out: int = 0
    interrupt_in: int = 0
    resets: int = 0


class SimUsbDevice:
    """A device with one configuration. Subclasses set ``identity`` and ``alt_settings``
    and answer requests; they call :meth:`vanish` or :meth:`reenumerate` to leave the
    bus the way a rebooting chip does."""

    identity: Identity
    alt_settings: tuple[AltSetting, ...] = ()
    #: Class-specific bytes in the configuration descriptor after all interfaces.
    config_extra: bytes = b""
    config_attributes: int = 0x80
    max_power_ma: int = 100

    def __init__(self, *, throttle: bool = False) -> None:
        #: Sleep for the modelled transfer and chip times; tests usually turn it off.
        self.throttle = throttle
        #: Simulated seconds spent; advanced whether or not the device sleeps.
        self.elapsed = 0.0
        self.traffic = Traffic()
        self.lock = threading.RLock()
        self.bus: SimUsbBus | None = None
        self.attachment: Attachment | None = None
        self.current_alt: dict[int, int] = {}
        #: Open handles refuse with "access denied" (a missing udev rule).
        self.deny_access = False
        #: Claiming an interface fails with "busy" (another program has it).
        self.busy = False

    # ------------------------------------------------------------ descriptors

    def strings(self) -> list[str]:
        """String descriptors from index 1 on, in the order ``string_index`` gives."""
        found: list[str] = []
        for text in (
            self.identity.manufacturer,
            self.identity.product,
            self.identity.serial,
            *(a.name for a in self.alt_settings),
        ):
            if text is not None and text not in found:
                found.append(text)
        return found

    def string_index(self, text: str | None) -> int:
        return 0 if text is None else self.strings().index(text) + 1

    def string_descriptor(self, index: int) -> bytes:
        if index == 0:
            return bytes([4, DESCRIPTOR_STRING]) + struct.pack("<H", 0x0409)
        strings = self.strings()
        if not 1 <= index <= len(strings):
            raise Stall(f"no string {index}")
        body = strings[index - 1].encode("utf-16-le")
        return bytes([len(body) + 2, DESCRIPTOR_STRING]) + body

    def interfaces(self) -> list[list[AltSetting]]:
        """Alternate settings grouped by interface number, in number order."""
        numbers = sorted({a.interface for a in self.alt_settings})
        return [[a for a in self.alt_settings if a.interface == n] for n in numbers]

    # ---------------------------------------------------------------- requests

    def handle_control(self, setup: Setup, data: bytes) -> bytes:
        """Serve one control transfer; the transfer time is charged here."""
        with self.lock:
            self.traffic.control += 1
            self.traffic.control_bytes += len(data) if not setup.device_to_host else setup.length
            self.charge_transfer(len(data) if not setup.device_to_host else setup.length)
            if (
                setup.kind == 0
                and setup.request == REQUEST_GET_DESCRIPTOR
                and setup.value >> 8 == DESCRIPTOR_STRING
            ):
                return self.string_descriptor(setup.value & 0xFF)[: setup.length]
            return self.control(setup, data)

    def control(self, setup: Setup, data: bytes) -> bytes:
        """Class and vendor requests. Return the IN data (b"" for OUT requests)."""
        raise Stall(f"request 0x{setup.request_type:02x}/{setup.request} not supported")

    def set_alt(self, interface: int, alt: int) -> None:
        if not any(a.interface == interface and a.alt == alt for a in self.alt_settings):
            raise Stall(f"no alternate setting {alt} on interface {interface}")
        self.current_alt[interface] = alt

    def on_plug(self) -> None:
        """Power-on state: called each time the device (re)appears on the bus."""
        return None

    def bus_reset(self) -> None:
        """The host reset the port (libusb_reset_device)."""
        self.traffic.resets += 1

    def interrupt_out(self, endpoint: int, data: bytes, timeout: float) -> int:
        raise Stall(f"no OUT endpoint 0x{endpoint:02x}")

    def interrupt_in(self, endpoint: int, size: int, timeout: float) -> bytes:
        raise Stall(f"no IN endpoint 0x{endpoint:02x}")

    # ------------------------------------------------------------------ timing

    def charge_transfer(self, nbytes: int) -> None:
        """Time for a control transfer of ``nbytes`` data on a full-speed bus: setup
        and status packets plus the data packets, whole frames."""
        packets = 2 + -(-nbytes // self.identity.max_packet0)
        frames = -(-packets // PACKETS_PER_FRAME)
        self.spend(frames * FRAME_S)

    def spend(self, seconds: float) -> None:
        """Let ``seconds`` of chip or bus time pass."""
        self.elapsed += seconds
        if self.throttle and seconds > 0:
            time.sleep(seconds)

    # -------------------------------------------------------------- lifecycle

    def vanish(self) -> None:
        """Drop off the bus (the chip reset or jumped away)."""
        if self.bus is not None:
            self.bus.unplug(self)

    def reenumerate(self, replacement: SimUsbDevice | None = None, after: float = 0.05) -> None:
        """Drop off the bus and, ``after`` seconds later, come back at the same port with a
        new address: as ``replacement`` (the application, another bootloader) or as
        this device again."""
        bus = self.bus
        if bus is None:
            return
        port = self.attachment.port if self.attachment else "1"
        bus.unplug(self)
        bus.plug_later(replacement or self, port=port, after=after)

    def describe(self) -> str:
        return f"{self.identity.vid:04x}:{self.identity.pid:04x} {self.identity.product or ''}"
