"""USB DFU 1.1 on the wire: class requests, states, status codes and the functional
descriptor (facts: docs/protocols/README.md, USB DFU 1.1 §4-6).

Shared by plain DFU, ST's DfuSe and the STM32duino (Maple) bootloader, which differ in
what they do with the same requests, not in how the requests look.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from flashsh.errors import ProtocolError
from flashsh.transports.usb import UsbLink

OUT = 0x21  # host to device, class, interface
IN = 0xA1  # device to host, class, interface

DFUSE_VERSION = 0x011A
DESCRIPTOR_DFU_FUNCTIONAL = 0x21


class Request(IntEnum):
    DETACH = 0
    DNLOAD = 1
    UPLOAD = 2
    GETSTATUS = 3
    CLRSTATUS = 4
    GETSTATE = 5
    ABORT = 6


class State(IntEnum):
    APP_IDLE = 0
    APP_DETACH = 1
    IDLE = 2
    DNLOAD_SYNC = 3
    DNBUSY = 4
    DNLOAD_IDLE = 5
    MANIFEST_SYNC = 6
    MANIFEST = 7
    MANIFEST_WAIT_RESET = 8
    UPLOAD_IDLE = 9
    ERROR = 10


class Status(IntEnum):
    OK = 0x00
    ERR_TARGET = 0x01
    ERR_FILE = 0x02
    ERR_WRITE = 0x03
    ERR_ERASE = 0x04
    ERR_CHECK_ERASED = 0x05
    ERR_PROG = 0x06
    ERR_VERIFY = 0x07
    ERR_ADDRESS = 0x08
    ERR_NOTDONE = 0x09
    ERR_FIRMWARE = 0x0A
    ERR_VENDOR = 0x0B
    ERR_USBR = 0x0C
    ERR_POR = 0x0D
    ERR_UNKNOWN = 0x0E
    ERR_STALLEDPKT = 0x0F


#: What each status means to a user, in words a log line can carry.
STATUS_TEXT = {
    Status.OK: "no error",
    Status.ERR_TARGET: "the address is not allowed (errTARGET)",
    Status.ERR_FILE: "the file failed the device's check (errFILE)",
    Status.ERR_WRITE: "the memory cannot be written (errWRITE)",
    Status.ERR_ERASE: "the erase failed (errERASE)",
    Status.ERR_CHECK_ERASED: "the erase check failed (errCHECK_ERASED)",
    Status.ERR_PROG: "programming failed (errPROG)",
    Status.ERR_VERIFY: "the device's own verify failed (errVERIFY)",
    Status.ERR_ADDRESS: "the address is out of range (errADDRESS)",
    Status.ERR_NOTDONE: "the device expected more data (errNOTDONE)",
    Status.ERR_FIRMWARE: "the firmware is corrupt (errFIRMWARE)",
    Status.ERR_VENDOR: "read-out protection is on (errVENDOR)",
    Status.ERR_USBR: "an unexpected USB reset (errUSBR)",
    Status.ERR_POR: "an unexpected power-on reset (errPOR)",
    Status.ERR_UNKNOWN: "an unknown error (errUNKNOWN)",
    Status.ERR_STALLEDPKT: "the device refused an unexpected request (errSTALLEDPKT)",
}


def status_text(code: int) -> str:
    try:
        return STATUS_TEXT[Status(code)]
    except ValueError:
        return f"status 0x{code:02x}"


STATE_NAMES = {
    0: "appIDLE", 1: "appDETACH", 2: "dfuIDLE", 3: "dfuDNLOAD-SYNC", 4: "dfuDNBUSY",
    5: "dfuDNLOAD-IDLE", 6: "dfuMANIFEST-SYNC", 7: "dfuMANIFEST", 8: "dfuMANIFEST-WAIT-RESET",
    9: "dfuUPLOAD-IDLE", 10: "dfuERROR",
}  # fmt: skip


def state_name(code: int) -> str:
    return STATE_NAMES.get(code, f"state {code}")


@dataclass(frozen=True)
class StatusReply:
    """A GETSTATUS answer."""

    status: int
    poll_ms: int
    state: int
    string: int

    @classmethod
    def parse(cls, data: bytes) -> StatusReply:
        if len(data) < 6:
            raise ProtocolError(f"GETSTATUS answered {len(data)} bytes instead of 6")
        return cls(data[0], data[1] | data[2] << 8 | data[3] << 16, data[4], data[5])

    def pack(self) -> bytes:
        poll = self.poll_ms.to_bytes(3, "little")
        return bytes([self.status]) + poll + bytes([self.state, self.string])


@dataclass(frozen=True)
class Functional:
    """The DFU functional descriptor (type 0x21)."""

    attributes: int
    detach_timeout_ms: int
    transfer_size: int
    dfu_version: int

    @property
    def can_download(self) -> bool:
        return bool(self.attributes & 1)

    @property
    def can_upload(self) -> bool:
        return bool(self.attributes & 2)

    @property
    def manifestation_tolerant(self) -> bool:
        return bool(self.attributes & 4)

    @property
    def will_detach(self) -> bool:
        return bool(self.attributes & 8)

    def pack(self) -> bytes:
        return struct.pack(
            "<BBBHHH", 9, DESCRIPTOR_DFU_FUNCTIONAL, self.attributes,
            self.detach_timeout_ms, self.transfer_size, self.dfu_version,
        )  # fmt: skip


def parse_functional(blob: bytes) -> Functional | None:
    """Find the functional descriptor in a run of descriptors (interface or
    configuration extra bytes). A 7-byte DFU 1.0 descriptor counts as version 1.0."""
    pos = 0
    while pos + 2 <= len(blob):
        length, kind = blob[pos], blob[pos + 1]
        if length < 2:
            return None
        if kind == DESCRIPTOR_DFU_FUNCTIONAL and length >= 7:
            attributes, detach, size = struct.unpack_from("<BHH", blob, pos + 2)
            version = struct.unpack_from("<H", blob, pos + 7)[0] if length >= 9 else 0x0100
            return Functional(attributes, detach, size, version)
        pos += length
    return None


def functional_descriptor(link: UsbLink) -> Functional:
    """The functional descriptor of the device's DFU interface: after an interface
    descriptor or in the configuration's extra bytes (libusb puts it either place)."""
    config = link.device[0]
    for interface in config:
        found = parse_functional(bytes(interface.extra_descriptors or b""))
        if found is not None:
            return found
    found = parse_functional(bytes(config.extra_descriptors or b""))
    if found is None:
        raise ProtocolError(f"{link.info.usb_id} has no DFU functional descriptor")
    return found


def is_dfuse(link: UsbLink) -> bool:
    """ST's dialect: bcdDFUVersion 0x011A."""
    return functional_descriptor(link).dfu_version == DFUSE_VERSION


def dfu_interfaces(link: UsbLink) -> list[tuple[int, int, str | None]]:
    """(interface number, alternate setting, name) of every DFU-mode alt setting."""
    found = []
    for interface in link.device[0]:
        if (interface.bInterfaceClass, interface.bInterfaceSubClass) == (0xFE, 0x01):
            name = link.string(interface.iInterface)
            found.append((interface.bInterfaceNumber, interface.bAlternateSetting, name))
    return found


class DfuRequests:
    """The seven class requests on one interface, with errors that name the request."""

    def __init__(self, link: UsbLink, interface: int = 0) -> None:
        self.link = link
        self.interface = interface

    def detach(self, timeout_ms: int = 1000) -> None:
        self.link.control_out(OUT, Request.DETACH, timeout_ms, self.interface, what="DFU_DETACH")

    def dnload(self, block: int, data: bytes) -> None:
        self.link.control_out(OUT, Request.DNLOAD, block, self.interface, data,
                              what=f"DFU_DNLOAD of block {block}")  # fmt: skip

    def upload(self, block: int, length: int) -> bytes:
        return self.link.control_in(IN, Request.UPLOAD, block, self.interface, length,
                                    what=f"DFU_UPLOAD of block {block}")  # fmt: skip

    def get_status(self) -> StatusReply:
        data = self.link.control_in(IN, Request.GETSTATUS, 0, self.interface, 6,
                                    what="DFU_GETSTATUS")  # fmt: skip
        return StatusReply.parse(data)

    def clear_status(self) -> None:
        self.link.control_out(OUT, Request.CLRSTATUS, 0, self.interface, what="DFU_CLRSTATUS")

    def get_state(self) -> int:
        data = self.link.control_in(IN, Request.GETSTATE, 0, self.interface, 1,
                                    what="DFU_GETSTATE")  # fmt: skip
        if len(data) != 1:
            raise ProtocolError(f"GETSTATE answered {len(data)} bytes instead of 1")
        return data[0]

    def abort(self) -> None:
        self.link.control_out(OUT, Request.ABORT, 0, self.interface, what="DFU_ABORT")
