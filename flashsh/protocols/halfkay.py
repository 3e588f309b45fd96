"""PJRC's HalfKay bootloader on Teensy boards (USB 16c0:0478): write-only, whole images.

HalfKay takes one kind of HID output report, sent as a SET_REPORT control transfer: an
address header and one block of flash. The first block it gets after it starts erases
the whole application flash; a header of FF FF reboots into the application. Nothing is
ever sent back, so errors show only as failed transfers, and a transfer that fails
because the board left the bus after the reboot request is the reboot working. Facts
and sources: docs/protocols/halfkay.md.

The board is named by the HID usage in HalfKay's report descriptor (0x1B Teensy 2.0,
0x1C Teensy++ 2.0, ...; flashsh.chips.teensy); when the usage is 0, ``--chip`` names it.
Like teensy_loader_cli, flashsh sends the block at 0 first (it starts the erase), skips
blank blocks after that, and retries a block HalfKay stalls (it does while it erases).
"""

from __future__ import annotations

import time
from typing import Any

from flashsh.chips.teensy import TeensyModel, teensy_by_usage, teensy_model
from flashsh.errors import FlashshError, ProtocolError, TargetError, UnsupportedError
from flashsh.numbers import hexaddr, human_size
from flashsh.protocols.base import Capability, MemoryMap, Region, TargetInfo
from flashsh.protocols.usb_base import UsbBootloader
from flashsh.transports.usb import UsbLink

HID_CLASS = 3
HID_DESCRIPTOR = 0x21
REPORT_DESCRIPTOR = 0x22
GET_DESCRIPTOR = 0x06
STANDARD_IN_INTERFACE = 0x81
HID_OUT_REQUEST = 0x21
SET_REPORT = 0x09
OUTPUT_REPORT_0 = 0x0200
HALFKAY_USAGE_PAGE = 0xFF9C
#: The first writes wait for the erase of the whole application flash: PJRC asks hosts
#: to allow 3 s; an AT90USB1286 erasing 508 pages at 3.7-4.5 ms each needs about 2.
ERASE_TIMEOUT = 5.0
#: Any other block (teensy_loader_cli: 0.5 s).
WRITE_TIMEOUT = 0.5
#: Between attempts at a stalled block (teensy_loader_cli: 10 ms).
RETRY_PAUSE = 0.01

NOT_AGAIN = (
    "HalfKay erases the flash only on the first write after it starts, and this Teensy "
    "has been written since"
)
NOT_AGAIN_HINT = (
    "press the Teensy's button to start HalfKay again (or `reset` first), then program "
    "the whole image"
)


def hid_interface(link: UsbLink) -> Any:
    """The device's first HID interface. Raises ProtocolError."""
    for interface in link.interfaces():
        if interface.bInterfaceClass == HID_CLASS:
            return interface
    raise ProtocolError(f"{link.info.usb_id} at {link.info.port} has no HID interface")


def report_descriptor_length(interface: Any) -> int:
    """wDescriptorLength of the report descriptor, from the HID class descriptor that
    follows the interface descriptor; 256 when the device does not say."""
    extra = bytes(getattr(interface, "extra_descriptors", b"") or b"")
    at = 0
    while at + 2 <= len(extra) and extra[at] >= 2:
        length, kind = extra[at], extra[at + 1]
        if kind == HID_DESCRIPTOR and length >= 9:
            for item in range(6, length - 2, 3):
                if extra[at + item] == REPORT_DESCRIPTOR:
                    return int.from_bytes(extra[at + item + 1 : at + item + 3], "little")
        at += length
    return 256


def read_report_descriptor(link: UsbLink, interface: Any) -> bytes:
    return link.control_in(
        STANDARD_IN_INTERFACE,
        GET_DESCRIPTOR,
        REPORT_DESCRIPTOR << 8,
        interface.bInterfaceNumber,
        report_descriptor_length(interface),
        what="reading the HID report descriptor",
    )


def top_usage(descriptor: bytes) -> tuple[int, int]:
    """(usage page, usage) of the first top-level collection of a HID report
    descriptor (HID 1.11 §6.2.2: short items), (0, 0) when it names none."""
    page = usage = 0
    at = 0
    while at < len(descriptor):
        prefix = descriptor[at]
        if prefix == 0xFE:  # long item: size in the next byte
            at += 3 + (descriptor[at + 1] if at + 1 < len(descriptor) else 0)
            continue
        size = (0, 1, 2, 4)[prefix & 3]
        value = int.from_bytes(descriptor[at + 1 : at + 1 + size], "little")
        kind, tag = (prefix >> 2) & 3, prefix >> 4
        if kind == 1 and tag == 0:  # global: Usage Page
            page = value
        elif kind == 2 and tag == 0:  # local: Usage (4 bytes carry their own page)
            if size == 4:
                page, usage = value >> 16, value & 0xFFFF
            else:
                usage = value
        elif kind == 0 and tag == 0xA:  # main: Collection
            return page, usage
        at += 1 + size
    return page, usage


class HalfKay(UsbBootloader):
    name = "halfkay"
    kinds = ("halfkay",)
    capabilities = Capability.WRITE | Capability.CHIP_ERASE
    after_start = (
        "the Teensy runs its program; press its button, and the next command finds HalfKay"
    )
    no_read_reason = "HalfKay has no read command: it can only write and reboot"

    def __init__(self, link: Any) -> None:
        super().__init__(link)
        self.interface = 0
        self.model: TeensyModel | None = None
        self.usage = 0
        #: The erase has been started (the first block went out) since HalfKay started.
        self._erased = False
        #: Blocks with data went out since HalfKay started.
        self._written = False
        self._transfer_open = False
        self._erase_deadline = 0.0

    # ------------------------------------------------------------ connecting

    def start(self) -> None:
        interface = hid_interface(self.link)
        self.interface = interface.bInterfaceNumber
        # Detaches the kernel's HID driver, which binds HalfKay on Linux.
        self.link.claim(self.interface)
        try:
            page, self.usage = top_usage(read_report_descriptor(self.link, interface))
        except FlashshError:
            page, self.usage = 0, 0
        if page != HALFKAY_USAGE_PAGE:
            self.usage = 0
        self.model = self._model()
        self._erased = self._written = self._transfer_open = False
        self._erase_deadline = 0.0

    def _model(self) -> TeensyModel:
        info = self.link.info
        found = teensy_by_usage(self.usage) if self.usage else None
        hinted = teensy_model(self.chip_hint) if self.chip_hint else None
        if found and hinted and found.key != hinted.key:
            raise TargetError(
                f"--chip {self.chip_hint} is a {hinted.title}, but HalfKay on {info.port} "
                f"says it is a {found.title}",
                "leave out --chip",
            )
        model = found or hinted
        if model is None:
            said = "HID usage 0"
            if self.usage:
                said = f"HID usage 0x{self.usage:02X}, which flashsh does not know"
            raise ProtocolError(
                f"HalfKay on {info.usb_id} at {info.port} does not say which Teensy it is ({said})",
                "give the board: --chip at90usb1286 (Teensy++ 2.0) or --chip atmega32u4 "
                "(Teensy 2.0)",
            )
        if not model.supported:
            raise UnsupportedError(
                f"this is a {model.title}: flashsh writes only the AVR Teensys (2.0, ++2.0, "
                "1.0, ++1.0) through HalfKay",
                "use PJRC's Teensy Loader or teensy_loader_cli for it",
            )
        return model

    @property
    def board(self) -> TeensyModel:
        assert self.model is not None
        return self.model

    def identify(self) -> TargetInfo:
        info = self.link.info
        model = self.board
        how = f"HID usage 0x{self.usage:02X}" if self.usage else f"--chip {self.chip_hint}"
        return TargetInfo(
            protocol=self.name,
            bootloader="HalfKay (PJRC Teensy bootloader)",
            chip=model.title,
            link=self.link.description,
            how=f"USB {info.usb_id} at {info.port}, board from {how}",
            details={
                "usb_id": info.usb_id,
                "port": info.port,
                "board": model.name,
                "mcu": model.mcu,
                "usage": f"0x{self.usage:02X}",
                "application_flash": f"{human_size(model.code_size)} at 0x0000",
                "block_size": model.block_size,
                "header": model.header,
            },
        )

    def memory_map(self) -> MemoryMap:
        model = self.board
        flash = Region("flash", 0, model.flash_size, model.block_size, model.code_size, access="w")
        return MemoryMap((flash,), bootloader=(model.code_size, model.flash_size), app_start=0)

    def keep_alive(self) -> None:
        if self.link.gone():
            raise ProtocolError(f"HalfKay left the bus ({self.link.description})")

    # ------------------------------------------------------------ no reading

    def read(self, region: Region, address: int, length: int) -> bytes:
        raise UnsupportedError(f"{self.name} cannot read {region.name}", self.no_read_reason)

    def erase_units(self, region: Region, start: int, end: int) -> list[tuple[int, int]]:
        """HalfKay erases nothing but the whole application flash."""
        return [(0, self.board.code_size)]

    def read_fuses(self) -> dict[str, int]:
        raise UnsupportedError(
            "HalfKay has no fuse or lock commands", "use an ISP programmer (AVR ISP mkII)"
        )

    # ------------------------------------------------------------ writing

    def erase_chip(self) -> None:
        """Start HalfKay's erase with a blank block at 0 (as avrdude does)."""
        if self._written:
            raise UnsupportedError(NOT_AGAIN, NOT_AGAIN_HINT)
        if not self._erased:
            self._send_block(0, b"\xff" * self.board.block_size)

    def write_page(self, region: Region, address: int, data: bytes) -> None:
        model = self.board
        if not self._transfer_open:
            if self._written:
                raise UnsupportedError(NOT_AGAIN, NOT_AGAIN_HINT)
            self._transfer_open = True
        if address % model.block_size or address + len(data) > model.code_size:
            raise TargetError(
                f"block {hexaddr(address)}+{len(data)} is not a whole block below HalfKay "
                f"({hexaddr(model.code_size)})"
            )
        blank = b"\xff" * model.block_size
        data = data.ljust(model.block_size, b"\xff")
        try:
            if not self._erased and address != 0:
                self._send_block(0, blank)  # the first write erases; always block 0
            if self._erased and data == blank:
                return  # erased already
            self._send_block(address, data)
            self._written = self._written or data != blank
        except FlashshError:
            self._transfer_open = False
            raise

    def finish_writes(self) -> None:
        self._transfer_open = False

    def _send_block(self, address: int, data: bytes) -> None:
        if not self._erased:
            self._erase_deadline = time.monotonic() + ERASE_TIMEOUT
        self._write(self.board.header_for(address) + data, f"the block at {hexaddr(address)}")
        self._erased = True

    def _write(self, report: bytes, what: str) -> None:
        """One report; a stall (HalfKay still busy) is tried again until the block's
        time is up: seconds while the erase may still run, half a second otherwise."""
        started = time.monotonic()
        deadline = max(started + WRITE_TIMEOUT, self._erase_deadline)
        while True:
            left = deadline - time.monotonic()
            try:
                self.link.control_out(
                    HID_OUT_REQUEST, SET_REPORT, OUTPUT_REPORT_0, self.interface, report,
                    what=f"writing {what}", timeout_ms=max(100, int(left * 1000)),
                )  # fmt: skip
                return
            except ProtocolError as exc:
                if time.monotonic() >= deadline:
                    raise type(exc)(
                        f"HalfKay refused {what} for {time.monotonic() - started:.1f} s: "
                        f"{exc.message}",
                        "press the Teensy's button and program again",
                    ) from exc
            time.sleep(RETRY_PAUSE)

    # ------------------------------------------------------------ leaving

    def start_application(self) -> None:
        """A write to address FF FF. The board starts its program and leaves the bus,
        usually while the request is still under way: an error then is the reboot."""
        model = self.board
        report = b"\xff" * model.header_size + bytes(model.block_size)
        if model.header == "arm":
            report = b"\xff\xff\xff" + bytes(model.report_size - 3)
        try:
            self._write(report, "the reboot request")
        except FlashshError:
            if not self.link.gone():
                raise
        self._erased = self._written = self._transfer_open = False
