"""USB links through pyusb: finding bootloaders, opening them, following them across a
reboot, and saying plainly why a device cannot be used.

TARGET forms: ``usb`` (the only USB bootloader present), ``usb:VID:PID`` such as
``usb:0483:df11``, ``usb:VID:PID:SERIAL``, and ``usb:BUS-PORT[.PORT...]`` for a physical
port (``usb:1-1.3``, as ``lsusb -t`` and dfu-util ``-p`` name it).

The backend is libusb 1.0: the one the ``libusb-package`` wheel ships, else the
system's. ``--usb-backend MODULE:CALLABLE`` or ``FLASHSH_USB_BACKEND`` names any other
pyusb backend object (a callable returning one); the tests plug simulated devices in
that way (flashsh.sims.usb_bus).
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import usb.core
import usb.util

from flashsh.errors import FlashshError, NoAnswerError, ProtocolError, TransportError

SCHEME = "usb"
BACKEND_ENV = "FLASHSH_USB_BACKEND"

#: USB ids of bootloaders (and of applications that can be asked to reboot into one).
#: kind: what flashsh does with it; "serial" devices are reached through their tty.
KNOWN_DEVICES: dict[str, tuple[str, str]] = {
    "0483:df11": ("dfuse", "STM32 ROM DFU (DfuSe)"),
    "1eaf:0003": ("maple", "STM32duino (Maple) DFU bootloader"),
    "1209:beba": ("hid", "STM32 HID bootloader"),
    "16c0:0478": ("halfkay", "Teensy HalfKay bootloader"),
    "1d50:6015": ("dfu", "Smoothieboard DFU bootloader"),
    "1d50:6177": ("serial", "Katapult (use its serial port)"),
    "1d50:614e": ("app", "Klipper application (USB serial)"),
    "1209:db42": ("msc", "STM32 MSC bootloader drive (copy the .bin to it)"),
    "2e8a:0003": ("msc", "RP2040 BOOTSEL drive (copy the .uf2 to it)"),
    "2e8a:000f": ("msc", "RP2350 BOOTSEL drive (copy the .uf2 to it)"),
}

DFU_CLASS = (0xFE, 0x01)


def is_usb_target(target: str) -> bool:
    return target == SCHEME or target.startswith(SCHEME + ":")


@dataclass(frozen=True)
class Selector:
    """Which device a TARGET means."""

    vid: int | None = None
    pid: int | None = None
    serial: str | None = None
    port: str | None = None

    @classmethod
    def parse(cls, target: str) -> Selector:
        if target == SCHEME:
            return cls()
        rest = target[len(SCHEME) + 1 :]
        parts = rest.split(":")
        if len(parts) == 1 and "-" in rest:
            return cls(port=rest)
        try:
            if len(parts) in (2, 3) and all(len(p) == 4 for p in parts[:2]):
                serial = parts[2] if len(parts) == 3 and parts[2] else None
                return cls(int(parts[0], 16), int(parts[1], 16), serial)
        except ValueError:
            pass
        raise FlashshError(
            f"not a USB target: {target!r}",
            "use usb, usb:VID:PID (usb:0483:df11), usb:VID:PID:SERIAL or usb:BUS-PORT (usb:1-1.3)",
        )

    def matches(self, found: UsbDeviceInfo) -> bool:
        if self.port is not None:
            return found.port == self.port
        if self.vid is not None and (found.vid, found.pid) != (self.vid, self.pid):
            return False
        return self.serial is None or found.serial == self.serial

    def __str__(self) -> str:
        if self.port:
            return f"usb:{self.port}"
        if self.vid is None:
            return "usb"
        text = f"usb:{self.vid:04x}:{self.pid:04x}"
        return f"{text}:{self.serial}" if self.serial else text


def load_backend(spec: str | None = None) -> Any:
    """The pyusb backend to use: ``spec`` (``MODULE:CALLABLE``), else the environment
    variable, else libusb 1.0. Raises TransportError saying how to get one."""
    spec = spec or os.environ.get(BACKEND_ENV) or None
    if spec:
        module, sep, name = spec.partition(":")
        if not sep or not module or not name:
            raise TransportError(
                f"--usb-backend {spec!r} is not MODULE:CALLABLE",
                "for example flashsh.sims.usb_bus:backend",
            )
        try:
            factory = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise TransportError(f"cannot load USB backend {spec!r}: {exc}") from exc
        return factory() if callable(factory) else factory
    found = _libusb_backend()
    if found is None:
        raise TransportError(
            "no libusb 1.0 found for USB access",
            "pip install libusb-package, or install the system's libusb-1.0-0",
        )
    return found


def _libusb_backend() -> Any:
    try:
        import libusb_package

        found = libusb_package.get_libusb1_backend()
        if found is not None:
            return found
    except ImportError:
        pass
    import usb.backend.libusb1

    return usb.backend.libusb1.get_backend()


@dataclass
class UsbDeviceInfo:
    """One device on the bus, as ``usb`` lists it."""

    vid: int
    pid: int
    bus: int | None
    address: int | None
    port: str
    serial: str | None
    manufacturer: str | None
    product: str | None
    kind: str
    what: str
    device: Any = None

    @property
    def usb_id(self) -> str:
        return f"{self.vid:04x}:{self.pid:04x}"

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.usb_id,
            "bus": self.bus,
            "address": self.address,
            "port": self.port,
            "serial": self.serial,
            "product": self.product,
            "kind": self.kind,
            "what": self.what,
            "target": f"usb:{self.usb_id}" + (f":{self.serial}" if self.serial else ""),
        }


def _port_path(device: Any) -> str:
    numbers = getattr(device, "port_numbers", None) or ()
    bus = device.bus if device.bus is not None else 0
    return f"{bus}-{'.'.join(str(n) for n in numbers)}" if numbers else f"{bus}-?"


def _string(device: Any, index: int) -> str | None:
    """A string descriptor, or None when the device will not say (no permission)."""
    if not index:
        return None
    try:
        return usb.util.get_string(device, index)
    except (usb.core.USBError, ValueError, NotImplementedError):
        return None


def _has_dfu_interface(device: Any) -> bool:
    try:
        for config in device:
            for interface in config:
                if (interface.bInterfaceClass, interface.bInterfaceSubClass) == DFU_CLASS:
                    return True
    except (usb.core.USBError, NotImplementedError):
        return False
    return False


def describe_device(device: Any) -> UsbDeviceInfo | None:
    """What a device is, or None when it is no bootloader flashsh knows."""
    usb_id = f"{device.idVendor:04x}:{device.idProduct:04x}"
    kind, what = KNOWN_DEVICES.get(usb_id, ("", ""))
    if not kind:
        if not _has_dfu_interface(device):
            return None
        kind, what = "dfu", "USB DFU device"
    return UsbDeviceInfo(
        vid=device.idVendor,
        pid=device.idProduct,
        bus=device.bus,
        address=device.address,
        port=_port_path(device),
        serial=_string(device, device.iSerialNumber),
        manufacturer=_string(device, device.iManufacturer),
        product=_string(device, device.iProduct),
        kind=kind,
        what=what,
        device=device,
    )


def list_devices(backend: Any) -> list[UsbDeviceInfo]:
    """Every USB bootloader (and known application) on the bus."""
    try:
        devices = list(usb.core.find(find_all=True, backend=backend))
    except usb.core.NoBackendError as exc:
        raise TransportError(
            "no libusb 1.0 found for USB access",
            "pip install libusb-package, or install the system's libusb-1.0-0",
        ) from exc
    found = [info for d in devices if (info := describe_device(d)) is not None]
    return sorted(found, key=lambda i: (i.port, i.usb_id))


def udev_rule(vid: int, pid: int) -> str:
    return (
        f'SUBSYSTEM=="usb", ATTR{{idVendor}}=="{vid:04x}", ATTR{{idProduct}}=="{pid:04x}", '
        'MODE="0660", TAG+="uaccess"'
    )


def permission_hint(vid: int, pid: int) -> str:
    return (
        f"add the udev rule '{udev_rule(vid, pid)}' to /etc/udev/rules.d/70-flashsh.rules, "
        "run `sudo udevadm control --reload-rules` and plug the board in again "
        "(docs/usb.md)"
    )


def translate(exc: usb.core.USBError, what: str, info: UsbDeviceInfo | None = None) -> FlashshError:
    """A pyusb error as one line that says what to do."""
    code = exc.errno
    name = f"{info.usb_id} at {info.port}" if info else "the USB device"
    if code == errno.EACCES:
        vid, pid = (info.vid, info.pid) if info else (0, 0)
        return TransportError(
            f"permission denied on {name} while {what}", permission_hint(vid, pid)
        )
    if code == errno.EBUSY:
        return TransportError(
            f"{name} is busy: another program or a kernel driver holds it",
            "close dfu-util, Arduino IDE, ModemManager or other flashers and try again",
        )
    if code in (errno.ENODEV, errno.ENOENT):
        return DeviceGone(f"{name} is gone from the USB bus while {what}", "check the cable")
    if isinstance(exc, usb.core.USBTimeoutError) or code == errno.ETIMEDOUT:
        return NoAnswerError(f"{name} did not answer while {what}", "replug the board")
    if code == errno.EPIPE:
        return ProtocolError(f"{name} refused the request while {what} (stall)")
    return TransportError(f"USB error while {what} on {name}: {exc}")


class DeviceGone(TransportError):
    """The device left the bus (unplugged, or rebooted)."""


class UsbLink:
    """One open USB device. Protocols talk control and interrupt transfers through it;
    pyusb errors come out as FlashshErrors that name the device."""

    #: The first bytes ever received (byte links keep them for the probe chain).
    heard: bytes = b""

    def __init__(self, info: UsbDeviceInfo, backend: Any, target: str = "") -> None:
        self.info = info
        self.device = info.device
        self.backend = backend
        self.usb_id: str | None = info.usb_id
        self.description = target or str(Selector(info.vid, info.pid, info.serial))
        self.timeout_ms = 5000
        self._claimed: set[int] = set()

    # ---------------------------------------------------------------- control

    def control_out(self, request_type: int, request: int, value: int, index: int,
                    data: bytes = b"", *, what: str = "sending a request",
                    timeout_ms: int | None = None) -> int:  # fmt: skip
        try:
            return self.device.ctrl_transfer(
                request_type, request, value, index, data, timeout_ms or self.timeout_ms
            )
        except usb.core.USBError as exc:
            raise translate(exc, what, self.info) from exc

    def control_in(self, request_type: int, request: int, value: int, index: int,
                   length: int, *, what: str = "reading a reply",
                   timeout_ms: int | None = None) -> bytes:  # fmt: skip
        try:
            return bytes(
                self.device.ctrl_transfer(
                    request_type, request, value, index, length, timeout_ms or self.timeout_ms
                )
            )
        except usb.core.USBError as exc:
            raise translate(exc, what, self.info) from exc

    def interrupt_write(self, endpoint: int, data: bytes, *, what: str = "writing") -> int:
        try:
            return self.device.write(endpoint, data, self.timeout_ms)
        except usb.core.USBError as exc:
            raise translate(exc, what, self.info) from exc

    def interrupt_read(self, endpoint: int, size: int, timeout_ms: int, *,
                       what: str = "reading") -> bytes:  # fmt: skip
        try:
            return bytes(self.device.read(endpoint, size, timeout_ms))
        except usb.core.USBError as exc:
            raise translate(exc, what, self.info) from exc

    # ---------------------------------------------------------------- set-up

    def claim(self, interface: int, alt: int | None = None) -> None:
        """Claim ``interface`` (detaching a kernel driver if one holds it) and select an
        alternate setting when the interface has more than one."""
        try:
            try:
                if self.device.is_kernel_driver_active(interface):
                    self.device.detach_kernel_driver(interface)
            except (NotImplementedError, usb.core.USBError):
                pass
            if interface not in self._claimed:
                usb.util.claim_interface(self.device, interface)
                self._claimed.add(interface)
            if alt is not None and len(self.alt_settings(interface)) > 1:
                self.device.set_interface_altsetting(interface, alt)
        except usb.core.USBError as exc:
            raise translate(exc, f"claiming interface {interface}", self.info) from exc

    def alt_settings(self, interface: int) -> list[Any]:
        return [i for i in self.device[0] if i.bInterfaceNumber == interface]

    def interfaces(self) -> list[Any]:
        return list(self.device[0])

    def string(self, index: int) -> str | None:
        return _string(self.device, index)

    def reset(self) -> bool:
        """USB bus reset. False when the device was already gone (it rebooted)."""
        try:
            self.device.reset()
        except usb.core.USBError as exc:
            if exc.errno in (errno.ENODEV, errno.ENOENT):
                return False
            raise translate(exc, "resetting", self.info) from exc
        return True

    def gone(self) -> bool:
        """True when the device is no longer on the bus at its address."""
        return not any(
            d.bus == self.device.bus and d.address == self.device.address
            for d in usb.core.find(find_all=True, backend=self.backend)
        )

    def close(self) -> None:
        with contextlib.suppress(usb.core.USBError):
            usb.util.dispose_resources(self.device)
        self._claimed.clear()

    # ------------------------------------------------------------- following

    def follow(self, accept: Callable[[UsbDeviceInfo], bool], timeout: float,
               what: str) -> UsbDeviceInfo:  # fmt: skip
        """Wait for the device to come back after a reboot (same port, or the same serial
        number elsewhere) as something ``accept`` takes; returns it. Raises DeviceGone."""
        return wait_for_device(self.backend, self._same_board(accept), timeout, what)

    def _same_board(
        self, accept: Callable[[UsbDeviceInfo], bool]
    ) -> Callable[[UsbDeviceInfo], bool]:
        old = self.info

        def match(found: UsbDeviceInfo) -> bool:
            if found.bus == old.bus and found.address == old.address:
                return False  # the old enumeration, not yet gone
            same = found.port == old.port or (old.serial and found.serial == old.serial)
            return bool(same) and accept(found)

        return match

    def reopen(self, info: UsbDeviceInfo) -> None:
        """Continue on a new enumeration of the board."""
        self.close()
        self.info = info
        self.device = info.device
        self.usb_id = info.usb_id


def wait_for_device(backend: Any, match: Callable[[UsbDeviceInfo], bool], timeout: float,
                    what: str, poll: float = 0.05) -> UsbDeviceInfo:  # fmt: skip
    deadline = time.monotonic() + timeout
    while True:
        for info in list_devices(backend):
            if match(info):
                return info
        if time.monotonic() >= deadline:
            raise DeviceGone(
                f"no {what} appeared on USB within {timeout:g} s",
                "check `usb`; press reset or replug the board, then `connect` again",
            )
        time.sleep(poll)


def open_usb(target: str, backend_spec: str | None = None, *, backend: Any = None,
             description: str = "") -> UsbLink:  # fmt: skip
    """Open the one device ``target`` selects. Raises TransportError naming what is
    there when nothing or more than one device matches."""
    selector = Selector.parse(target)
    backend = backend if backend is not None else load_backend(backend_spec)
    found = [i for i in list_devices(backend) if selector.matches(i)]
    if selector.vid is None and selector.port is None:
        found = [i for i in found if i.kind not in ("serial", "msc", "app")]
    if not found:
        present = ", ".join(f"{i.usb_id} ({i.what}) at {i.port}" for i in list_devices(backend))
        raise TransportError(
            f"no USB bootloader matches {selector}",
            f"found: {present}"
            if present
            else "none is plugged in: put the board in its "
            "bootloader (BOOT0 high, double reset, or `bootloader` from its serial port)",
        )
    if len(found) > 1:
        names = ", ".join(f"usb:{i.usb_id}" + (f":{i.serial}" if i.serial else "") +
                          f" at {i.port}" for i in found)  # fmt: skip
        raise TransportError(
            f"{len(found)} USB bootloaders match {selector}: {names}",
            "name one by usb:VID:PID:SERIAL or by port, usb:BUS-PORT",
        )
    info = found[0]
    if info.kind == "serial":
        raise TransportError(
            f"{info.usb_id} ({info.what}) is a USB serial device",
            "connect to its serial port (/dev/ttyACM0, /dev/serial/by-id/...) instead",
        )
    if info.kind == "msc":
        raise TransportError(
            f"{info.usb_id} ({info.what}) is a drive, not a USB protocol",
            "connect to the drive instead: `connect msc` once it is mounted, or its mount "
            "point (docs/protocols/uf2-msc.md)",
        )
    link = UsbLink(info, backend, description or target)
    try:
        info.device.get_active_configuration()
    except usb.core.USBError as exc:
        if exc.errno == errno.EACCES:
            raise translate(exc, "opening", info) from exc
    except NotImplementedError:
        pass
    return link


def bootloader_at_port(port: str, backend_spec: str | None = None) -> UsbLink | None:
    """A USB bootloader (DFU, Maple, HID, HalfKay) now at the physical ``port``, opened;
    None when there is none or USB cannot be used here. For a board that was asked
    through its serial port to reboot and came back without one."""
    try:
        backend = load_backend(backend_spec)
        for info in list_devices(backend):
            if info.port == port and info.kind in ("dfuse", "dfu", "maple", "hid", "halfkay"):
                return UsbLink(info, backend)
    except (FlashshError, usb.core.USBError):
        return None
    return None
