"""A simulated USB bus and the pyusb backend that serves it.

``SimUsbBackend`` implements pyusb's backend interface over a :class:`SimUsbBus`, so
``usb.core.find(backend=...)`` sees the simulated devices with their real descriptors and
every request flashsh makes goes through pyusb exactly as on hardware. Devices are
plugged into ports; a device that reboots leaves the bus and may come back at the same
port with a new address, as a real one does.

From the command line: ``--usb-backend flashsh.sims.usb_bus:backend`` (or the same value
in ``FLASHSH_USB_BACKEND``) with ``FLASHSH_SIM_USB`` listing the devices to plug in, for
example ``FLASHSH_SIM_USB="sim://dfuse?chip=stm32f407 sim://maple"``.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from array import array
from dataclasses import dataclass
from types import SimpleNamespace

import usb.backend
import usb.core

from flashsh.sims.usb_device import Gone, Setup, Silent, SimUsbDevice, Stall

# libusb's error codes, as pyusb's libusb1 backend reports them.
_ERRORS = {
    "access": (-3, errno.EACCES, "Access denied (insufficient permissions)"),
    "gone": (-4, errno.ENODEV, "No such device (it may have been disconnected)"),
    "busy": (-6, errno.EBUSY, "Resource busy"),
    "timeout": (-7, errno.ETIMEDOUT, "Operation timed out"),
    "pipe": (-9, errno.EPIPE, "Pipe error"),
}


def usb_error(kind: str) -> usb.core.USBError:
    code, number, text = _ERRORS[kind]
    if kind == "timeout":
        return usb.core.USBTimeoutError(text, code, number)
    return usb.core.USBError(text, code, number)


@dataclass(eq=False)
class Attachment:
    """One enumeration of a device: what pyusb's ``dev`` identifies. A device that
    re-enumerates gets a new one; the old one answers "no such device"."""

    device: SimUsbDevice
    address: int
    port: str
    live: bool = True

    @property
    def bus_number(self) -> int:
        return int(self.port.split("-")[0]) if "-" in self.port else 1


class SimUsbBus:
    """Ports with devices in them. Thread-safe: a device may leave the bus from inside a
    request, and come back from a timer thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._attached: list[Attachment] = []
        self._next_address = 2
        self._next_port = 1
        self._timers: list[threading.Timer] = []

    def plug(self, device: SimUsbDevice, port: str | None = None) -> Attachment:
        with self._lock:
            if port is None:
                port = f"1-{self._next_port}"
                self._next_port += 1
            attachment = Attachment(device, self._next_address, port)
            self._next_address = self._next_address % 127 + 1 or 2
            device.bus = self
            device.attachment = attachment
            device.current_alt = {}
            device.on_plug()
            self._attached.append(attachment)
            return attachment

    def unplug(self, device: SimUsbDevice) -> None:
        with self._lock:
            for attachment in list(self._attached):
                if attachment.device is device:
                    attachment.live = False
                    self._attached.remove(attachment)

    def plug_later(self, device: SimUsbDevice, *, port: str, after: float) -> None:
        """Plug ``device`` in at ``port`` after ``after`` seconds (re-enumeration)."""
        device.bus = self
        timer = threading.Timer(after, self.plug, args=(device, port))
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def devices(self) -> list[Attachment]:
        with self._lock:
            return list(self._attached)

    def wait_idle(self, timeout: float = 2.0) -> None:
        """Wait until every scheduled re-plug has happened (tests)."""
        deadline = time.monotonic() + timeout
        for timer in list(self._timers):
            timer.join(max(0.0, deadline - time.monotonic()))


class _Handle:
    def __init__(self, attachment: Attachment) -> None:
        self.attachment = attachment

    @property
    def device(self) -> SimUsbDevice:
        if not self.attachment.live:
            raise usb_error("gone")
        return self.attachment.device


def _guard(call):  # type: ignore[no-untyped-def]
    """Turn a simulated device's Stall/Gone/Silent into the USBError libusb would give."""
    try:
        return call()
    except Stall:
        raise usb_error("pipe") from None
    except Gone:
        raise usb_error("gone") from None
    except Silent:
        raise usb_error("timeout") from None


class SimUsbBackend(usb.backend.IBackend):
    """pyusb's view of a :class:`SimUsbBus`."""

    def __init__(self, bus: SimUsbBus) -> None:
        self.bus = bus

    # ------------------------------------------------------------ enumeration

    def enumerate_devices(self):  # type: ignore[no-untyped-def]
        return iter(self.bus.devices())

    def get_parent(self, dev: Attachment) -> None:
        return None

    def get_device_descriptor(self, dev: Attachment) -> SimpleNamespace:
        device = dev.device
        ident = device.identity
        ports = tuple(int(p) for p in dev.port.split("-", 1)[-1].split("."))
        return SimpleNamespace(
            bLength=18,
            bDescriptorType=1,
            bcdUSB=ident.bcd_usb,
            bDeviceClass=ident.device_class,
            bDeviceSubClass=ident.device_subclass,
            bDeviceProtocol=ident.device_protocol,
            bMaxPacketSize0=ident.max_packet0,
            idVendor=ident.vid,
            idProduct=ident.pid,
            bcdDevice=ident.bcd_device,
            iManufacturer=device.string_index(ident.manufacturer),
            iProduct=device.string_index(ident.product),
            iSerialNumber=device.string_index(ident.serial),
            bNumConfigurations=1,
            address=dev.address,
            bus=dev.bus_number,
            port_number=ports[-1],
            port_numbers=ports,
            speed=2,  # full speed
        )

    def get_configuration_descriptor(self, dev: Attachment, config: int) -> SimpleNamespace:
        if config != 0:
            raise IndexError("only one configuration")
        device = dev.device
        alts = device.alt_settings
        total = 9 + sum(9 + len(a.extra) + 7 * len(a.endpoints) for a in alts)
        total += len(device.config_extra)
        return SimpleNamespace(
            bLength=9,
            bDescriptorType=2,
            wTotalLength=total,
            bNumInterfaces=len(device.interfaces()),
            bConfigurationValue=1,
            iConfiguration=0,
            bmAttributes=device.config_attributes,
            bMaxPower=device.max_power_ma // 2,
            extra_descriptors=list(device.config_extra),
        )

    def get_interface_descriptor(
        self, dev: Attachment, intf: int, alt: int, config: int
    ) -> SimpleNamespace:
        device = dev.device
        try:
            setting = device.interfaces()[intf][alt]
        except IndexError:
            raise IndexError(f"no interface {intf} alt {alt}") from None
        return SimpleNamespace(
            bLength=9,
            bDescriptorType=4,
            bInterfaceNumber=setting.interface,
            bAlternateSetting=setting.alt,
            bNumEndpoints=len(setting.endpoints),
            bInterfaceClass=setting.cls,
            bInterfaceSubClass=setting.subclass,
            bInterfaceProtocol=setting.protocol,
            iInterface=device.string_index(setting.name),
            extra_descriptors=list(setting.extra),
        )

    def get_endpoint_descriptor(
        self, dev: Attachment, ep: int, intf: int, alt: int, config: int
    ) -> SimpleNamespace:
        endpoint = dev.device.interfaces()[intf][alt].endpoints[ep]
        return SimpleNamespace(
            bLength=7,
            bDescriptorType=5,
            bEndpointAddress=endpoint.address,
            bmAttributes=endpoint.attributes,
            wMaxPacketSize=endpoint.max_packet,
            bInterval=endpoint.interval,
            bRefresh=0,
            bSynchAddress=0,
            extra_descriptors=[],
        )

    # ---------------------------------------------------------------- handles

    def open_device(self, dev: Attachment) -> _Handle:
        if not dev.live:
            raise usb_error("gone")
        if dev.device.deny_access:
            raise usb_error("access")
        return _Handle(dev)

    def close_device(self, dev_handle: _Handle) -> None:
        return None

    def set_configuration(self, dev_handle: _Handle, config_value: int) -> None:
        dev_handle.device  # noqa: B018 - raises when the device is gone

    def get_configuration(self, dev_handle: _Handle) -> int:
        dev_handle.device  # noqa: B018
        return 1

    def set_interface_altsetting(self, dev_handle: _Handle, intf: int, altsetting: int) -> None:
        device = dev_handle.device
        _guard(lambda: device.set_alt(intf, altsetting))

    def claim_interface(self, dev_handle: _Handle, intf: int) -> None:
        if dev_handle.device.busy:
            raise usb_error("busy")

    def release_interface(self, dev_handle: _Handle, intf: int) -> None:
        return None

    def is_kernel_driver_active(self, dev_handle: _Handle, intf: int) -> bool:
        return False

    def detach_kernel_driver(self, dev_handle: _Handle, intf: int) -> None:
        return None

    def attach_kernel_driver(self, dev_handle: _Handle, intf: int) -> None:
        return None

    def reset_device(self, dev_handle: _Handle) -> None:
        device = dev_handle.device
        _guard(device.bus_reset)

    def clear_halt(self, dev_handle: _Handle, ep: int) -> None:
        dev_handle.device  # noqa: B018

    # -------------------------------------------------------------- transfers

    def ctrl_transfer(
        self,
        dev_handle: _Handle,
        bmRequestType: int,  # noqa: N803 - pyusb's parameter names
        bRequest: int,  # noqa: N803
        wValue: int,  # noqa: N803
        wIndex: int,  # noqa: N803
        data: array,
        timeout: int,
    ) -> int:
        device = dev_handle.device
        inbound = bool(bmRequestType & 0x80)
        setup = Setup(bmRequestType, bRequest, wValue, wIndex, len(data), timeout)
        payload = b"" if inbound else bytes(data)
        answer = _guard(lambda: device.handle_control(setup, payload))
        if not inbound:
            return len(data)
        answer = answer[: len(data)]
        data[: len(answer)] = array("B", answer)
        return len(answer)

    def intr_write(self, dev_handle: _Handle, ep: int, intf: int, data: array, timeout: int) -> int:
        device = dev_handle.device
        return _guard(lambda: device.interrupt_out(ep, bytes(data), timeout / 1000))

    def intr_read(self, dev_handle: _Handle, ep: int, intf: int, buff: array, timeout: int) -> int:
        device = dev_handle.device
        answer = _guard(lambda: device.interrupt_in(ep, len(buff), timeout / 1000))
        buff[: len(answer)] = array("B", answer)
        return len(answer)


#: The bus ``backend()`` serves, shared by every call in one process.
_DEFAULT: SimUsbBus | None = None


def default_bus() -> SimUsbBus:
    """The process's simulated bus, with the devices ``FLASHSH_SIM_USB`` names plugged in
    the first time it is asked for."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = SimUsbBus()
        for url in os.environ.get("FLASHSH_SIM_USB", "").replace(",", " ").split():
            _DEFAULT.plug(make_device(url))
    return _DEFAULT


def make_device(url: str) -> SimUsbDevice:
    """Build the simulated USB device a ``sim://NAME?options`` URL describes."""
    from flashsh.sims import sim_class
    from flashsh.sims.url import parse_sim_url

    name, options = parse_sim_url(url)
    return sim_class(name).from_options(options, host_baud=None)


def backend() -> SimUsbBackend:
    """``--usb-backend flashsh.sims.usb_bus:backend``: the simulated bus of this process."""
    return SimUsbBackend(default_bus())
