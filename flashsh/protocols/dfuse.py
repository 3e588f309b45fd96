"""ST's DfuSe: the STM32 system-memory DFU bootloader (0483:df11) and other devices with
bcdDFUVersion 0x011A (facts: docs/protocols/dfuse.md; ST AN2662 §4 / AN3156).

What flashsh does with it:

* ``start``: claim the DFU interface on the flash's alternate setting, bring the device
  to dfuIDLE (a fresh ROM often greets with dfuERROR/errFIRMWARE: CLRSTATUS; dfuDNLOAD-
  IDLE or dfuUPLOAD-IDLE: ABORT), read the memory layout of every alternate setting,
  list the ROM's commands and find out whether read-out protection is on;
* every DNLOAD command (set address ``21``, erase ``41``, read unprotect ``92``) and
  every data block runs on the GETSTATUS that follows it, which answers dfuDNBUSY and
  the time to wait (bwPollTimeout, honoured); the next GETSTATUS gives the outcome;
* writes and reads use the block-number arithmetic the ROM documents (block N lands at
  pointer + (N - 2) x length), so the pointer is set once per run of pages rather than
  once per 2 KiB as dfu-util does; reads ABORT to dfuIDLE first;
* ``reset`` (``leave``): set the pointer to the application, send a zero-length DNLOAD;
  the GETSTATUS after it answers dfuMANIFEST and the ROM drops off the bus to start the
  application. A device that is already gone at that GETSTATUS has also left: that is
  the "Error during download get_status" dfu-util users see after ``:leave``, and it is
  success, not a failure.
"""

from __future__ import annotations

import errno
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, ClassVar

import usb.core

from flashsh.chips.dfuse import DfuSeRomChip, dfuse_chips, flash_signature, identify_rom
from flashsh.errors import FlashshError, NoAnswerError, ProtocolError, TargetError, UnsupportedError
from flashsh.numbers import hexaddr
from flashsh.protocols.base import Capability, MemoryMap, Region, TargetInfo
from flashsh.protocols.dfu_layout import Layout, parse_layout
from flashsh.protocols.dfu_wire import (
    IN,
    DfuRequests,
    Request,
    State,
    Status,
    StatusReply,
    functional_descriptor,
    state_name,
    status_text,
)
from flashsh.protocols.usb_base import UsbBootloader
from flashsh.transports.usb import DeviceGone, UsbLink

if TYPE_CHECKING:
    from flashsh.images import Image

ST_ROM_ID = "0483:df11"
SET_ADDRESS, ERASE, READ_UNPROTECT = 0x21, 0x41, 0x92
COMMAND_NAMES = {0x00: "Get", 0x21: "Set Address", 0x41: "Erase", 0x92: "Read Unprotect"}
#: dfu-util caps transfers at 4 KiB ("limited to 4k in libusb Linux backend").
MAX_TRANSFER = 4096
#: The STM32F405 reports 100 ms for a mass erase that takes up to ~32 s (dfu-util waits
#: 35 s); flashsh keeps polling until then instead of trusting the 100 ms.
LIED_POLL_MS = 100
MASS_ERASE_PATIENCE = 35.0
#: Beyond the reported poll time, how long an erase or write may go on answering late
#: (a stall or a timeout: STM32L4 ROMs stall GETSTATUS while they erase).
POLL_GRACE = 2.0
#: A run of zero poll times this long means the device is stuck (dfu-util's limit).
STUCK_POLLS = 100
#: Read unprotect mass-erases before the reset; F4 at x8 takes up to 32 s.
UNPROTECT_TIMEOUT = 40.0
UPLOAD_MIN = 2  # AN2662 §4.4.1: reads of 2 to 2048 bytes
READOUT_HINT = "`unprotect readout` erases the chip to remove it"
REGION_NAMES = {"Internal Flash": "flash", "Option Bytes": "options", "OTP Memory": "otp",
                "Device Feature": "feature"}  # fmt: skip


def _is_stall_or_silence(exc: FlashshError) -> bool:
    """A refused (stalled) or unanswered request, as opposed to a device gone."""
    if isinstance(exc, NoAnswerError):
        return True
    cause = exc.__cause__
    return isinstance(cause, usb.core.USBError) and cause.errno == errno.EPIPE


class DfuSe(UsbBootloader):
    """One DfuSe device, claimed on its DFU interface."""

    name = "dfuse"
    kinds = ("dfuse",)
    after_start = (
        "the ROM jumped to the application; flashsh follows the board if it comes back on USB"
    )
    #: Address blocks by number from one pointer (False: set the pointer for every
    #: block, as dfu-util does).
    use_block_numbers: ClassVar[bool] = True

    # ------------------------------------------------------------------ connection

    def start(self) -> None:
        link = self.link
        functional = functional_descriptor(link)
        self.transfer_size = max(64, min(functional.transfer_size, MAX_TRANSFER))
        self.interface, self.layouts = _read_layouts(link)
        self.flash_alt = next(
            (alt for alt, lay in self.layouts.items() if "flash" in lay.name.lower()),
            min(self.layouts),
        )
        self.requests = DfuRequests(link, self.interface)
        link.claim(self.interface, self.flash_alt)
        self.alt = self.flash_alt
        self.state: State | None = None
        self.pointer: int | None = None
        self.jump_address: int | None = getattr(self, "jump_address", None)
        self.greeting = self._to_idle()
        self.commands = self._get_commands()
        self.bcd_device = int(getattr(link.device, "bcdDevice", 0) or 0)
        self.chip_name, self.rom_chip = self._identify_chip()
        self._map = self._build_map()
        self.capabilities = (
            Capability.READ | Capability.WRITE | Capability.PAGE_ERASE
            | Capability.ERASE_BEFORE_WRITE | Capability.PROTECTION
        )  # fmt: skip
        if self._map.bootloader is None:
            # A mass erase would take a bootloader in flash with it.
            self.capabilities |= Capability.CHIP_ERASE
        self.readout = self._probe_readout()

    def _identify_chip(self) -> tuple[str, DfuSeRomChip | None]:
        hint = (self.chip_hint or "").lower()
        for key, chip in dfuse_chips().items():
            if hint and hint in (key, (chip.part or "").lower()):
                if flash_signature(chip.flash) != flash_signature(self.flash_layout):
                    raise TargetError(
                        f"--chip {self.chip_hint}: {chip.name} has other flash than this "
                        f"device ({self.flash_layout.summary()})",
                        "leave out --chip, or name the chip the board really has",
                    )
                self.chip_from = "--chip"
                return chip.name, chip
        self.chip_from = "its flash layout and bcdDevice"
        st_rom = self.link.info.usb_id == ST_ROM_ID
        return identify_rom(self.flash_layout, self.bcd_device, st_rom=st_rom)

    @property
    def flash_layout(self) -> Layout:
        return self.layouts[self.flash_alt]

    def _to_idle(self) -> StatusReply:
        """Bring the device to dfuIDLE as dfu-util does; returns the first status (a
        fresh ROM may greet with dfuERROR/errFIRMWARE, which CLRSTATUS clears)."""
        first: StatusReply | None = None
        for _ in range(8):
            reply = self._status()
            first = first or reply
            if reply.state == State.IDLE:
                self.state = State.IDLE
                return first
            if reply.state == State.ERROR:
                self.requests.clear_status()
            elif reply.state in (State.DNLOAD_IDLE, State.UPLOAD_IDLE, State.DNLOAD_SYNC,
                                 State.MANIFEST_SYNC):  # fmt: skip
                self.requests.abort()
            elif reply.state == State.DNBUSY:
                time.sleep(max(reply.poll_ms, 10) / 1000)
            else:
                break
        raise ProtocolError(
            f"the DfuSe device stays in {state_name(reply.state)} ({status_text(reply.status)})",
            "press reset with BOOT0 high and connect again",
        )

    def _get_commands(self) -> tuple[int, ...]:
        """UPLOAD block 0: the command codes the ROM takes (not every DfuSe device has it)."""
        try:
            answer = self.requests.upload(0, 16)
        except ProtocolError:
            self._recover()
            return ()
        self.state = State.IDLE if len(answer) < 16 else State.UPLOAD_IDLE
        return tuple(answer)

    def _probe_readout(self) -> bool | None:
        """Read two bytes of flash: refused with errVENDOR under read-out protection."""
        flash = self._map.flash
        self.readout = None
        try:
            self.read(flash, flash.start, UPLOAD_MIN)
        except TargetError:
            return self.readout
        except FlashshError:
            return None
        return False

    def keep_alive(self) -> None:
        """After a failed exchange: the device back to dfuIDLE (raises if it is gone)."""
        self.pointer = None
        self._to_idle()

    # ------------------------------------------------------------------ facts

    def identify(self) -> TargetInfo:
        info = self.link.info
        layouts = ", ".join(f"{alt} {lay.name}" for alt, lay in sorted(self.layouts.items()))
        flash = self.flash_layout
        details: dict[str, object] = {
            "usb_id": info.usb_id,
            "serial": info.serial,
            "alternate_settings": layouts,
            "flash_layout": f"{hexaddr(flash.start)}-{hexaddr(flash.end - 1)}: {flash.summary()}",
            "transfer_size": self.transfer_size,
            "commands": ", ".join(COMMAND_NAMES.get(c, f"0x{c:02X}") for c in self.commands)
            or "not listed",
            "readout_protection": {True: "on", False: "off", None: "unknown"}[self.readout],
        }
        if self.greeting.state == State.ERROR:
            details["greeting"] = (
                f"dfuERROR, {status_text(self.greeting.status)}; cleared (a fresh ST ROM "
                "often starts so)"
            )
        notes = [n for lay in self.layouts.values() for n in lay.notes]
        if notes:
            details["layout_notes"] = "; ".join(notes)
        rom = info.usb_id == ST_ROM_ID
        what = "STM32 ROM DFU (DfuSe)" if rom else f"DfuSe bootloader ({info.product})"
        return TargetInfo(
            protocol=self.name,
            bootloader=f"{what}, bcdDevice 0x{self.bcd_device:04x}",
            chip=self.chip_name,
            link=self.link.description,
            how=f"USB {info.usb_id} at {info.port}, DFU interface {self.interface}, "
            f"bcdDFUVersion 0x011A; chip named by {self.chip_from}",
            details=details,
        )

    def memory_map(self) -> MemoryMap:
        return self._map

    def _build_map(self) -> MemoryMap:
        """Flash (bank 0) from the flash alternate setting; the other settings' memories
        (option bytes, OTP) as read-only banks: writing option bytes resets the chip
        and OTP cannot be undone, so flashsh never writes them."""
        flash = self.flash_layout
        start, end = flash.groups()[0]
        units = [s.size for s in flash.segments if s.start < end]
        regions = [Region("flash", start, end - start, self.transfer_size, min(units), "rw", 0)]
        self.region_alt = {"flash": self.flash_alt}
        for alt, layout in sorted(self.layouts.items()):
            groups = layout.groups()[1:] if alt == self.flash_alt else layout.groups()
            for n, (low, high) in enumerate(groups):
                if not all(s.readable for s in layout.segments if low <= s.start < high):
                    continue
                base = REGION_NAMES.get(layout.name, layout.name.lower().replace(" ", "_"))
                name = base if n == 0 and alt != self.flash_alt else f"{base}{n + 2}"
                page = min(high - low, self.transfer_size)
                regions.append(Region(name, low, high - low, page, page, "r", len(regions)))
                self.region_alt[name] = alt
        first_writable = flash.writable_prefix_end()
        bootloader = (start, first_writable) if first_writable > start else None
        return MemoryMap(tuple(regions), bootloader=bootloader, app_start=first_writable)

    # ------------------------------------------------------------------ the wire

    def _status(self, timeout_ms: int | None = None) -> StatusReply:
        data = self.link.control_in(IN, Request.GETSTATUS, 0, self.interface, 6,
                                    what="DFU_GETSTATUS", timeout_ms=timeout_ms)  # fmt: skip
        return StatusReply.parse(data)

    def _recover(self) -> None:
        """After a refused request: dfuIDLE again, quietly if possible."""
        self.state = None
        self.pointer = None
        with suppress(FlashshError):
            self._to_idle()

    def _error(self, status: int, what: str, address: int | None) -> FlashshError:
        where = f" at {hexaddr(address)}" if address is not None else ""
        if status == Status.ERR_TARGET:
            return TargetError(
                f"{what}{where}: address not allowed (errTARGET)",
                "the ROM takes only addresses inside its memories; `info` lists them",
            )
        if status == Status.ERR_VENDOR:
            self.readout = True
            return TargetError(f"{what}{where}: read-out protection is on", READOUT_HINT)
        if status in (Status.ERR_PROG, Status.ERR_WRITE, Status.ERR_CHECK_ERASED):
            return TargetError(
                f"{what}{where} failed: {status_text(status)}",
                "the flash there may not be erased: `erase` it first, or use `program`",
            )
        return ProtocolError(f"{what}{where} failed: {status_text(status)}")

    def _explain(self, exc: FlashshError, what: str, address: int | None) -> FlashshError:
        """A refused DNLOAD or UPLOAD: the status says why (errVENDOR, errTARGET)."""
        self.state = None
        if isinstance(exc, DeviceGone) or not _is_stall_or_silence(exc):
            return exc
        try:
            reply = self._status()
        except FlashshError:
            return exc
        self._recover()
        if reply.state == State.ERROR and reply.status not in (Status.OK, Status.ERR_STALLEDPKT):
            return self._error(reply.status, what, address)
        where = f" at {hexaddr(address)}" if address is not None else ""
        return ProtocolError(f"{what}{where}: {exc.message}", exc.hint)

    @contextmanager
    def _exchange(self, what: str, address: int | None = None) -> Iterator[None]:
        try:
            yield
        except FlashshError as exc:
            raise self._explain(exc, what, address) from exc

    def _await(self, what: str, address: int | None = None, *, patience: float = 0.0) -> None:
        """The GETSTATUS that carries out the last DNLOAD, then waiting the poll time
        while dfuDNBUSY; raises the outcome's error. ``patience``: how long a late
        answer is waited for when the device reports the STM32F405's 100 ms."""
        reply = self._status()
        deadline = time.monotonic() + reply.poll_ms / 1000 + POLL_GRACE
        if patience and reply.poll_ms == LIED_POLL_MS:
            deadline = time.monotonic() + patience
        zero = 0
        while reply.state in (State.DNBUSY, State.DNLOAD_SYNC):
            time.sleep(reply.poll_ms / 1000)
            zero = zero + 1 if reply.poll_ms == 0 else 0
            if zero > STUCK_POLLS:
                raise ProtocolError(f"{what}: the device stays busy", "replug the board")
            try:
                reply = self._status()
            except DeviceGone:
                raise
            except FlashshError as exc:
                if not _is_stall_or_silence(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)  # still busy: ask again
                reply = StatusReply(Status.OK, 0, State.DNBUSY, 0)
        if reply.state == State.ERROR or reply.status != Status.OK:
            self._recover()
            raise self._error(reply.status, what, address)
        if reply.state != State.DNLOAD_IDLE:
            self._recover()
            raise ProtocolError(
                f"{what}: the device reports {state_name(reply.state)}, not dfuDNLOAD-IDLE"
            )
        self.state = State.DNLOAD_IDLE

    def _ready_to_download(self) -> None:
        if self.state == State.UPLOAD_IDLE:
            self.requests.abort()
            self.state = State.IDLE
        elif self.state is None:
            self._to_idle()

    def _ready_to_upload(self) -> None:
        if self.state == State.DNLOAD_IDLE:
            # AN2662 §4.3: uploads start in dfuIDLE; a command leaves dfuDNLOAD-IDLE.
            self.requests.abort()
            self.state = State.IDLE
        elif self.state is None:
            self._to_idle()

    def _command(self, payload: bytes, what: str, address: int | None = None,
                 *, patience: float = 0.0) -> None:  # fmt: skip
        self._ready_to_download()
        with self._exchange(what, address):
            self.requests.dnload(0, payload)
        self._await(what, address, patience=patience)

    def _set_pointer(self, address: int) -> None:
        self._command(struct.pack("<BI", SET_ADDRESS, address), "setting the address", address)
        self.pointer = address

    def _block_for(self, address: int, size: int) -> int:
        """The block number that reaches ``address`` from the current pointer, setting
        the pointer there when it cannot."""
        if self.use_block_numbers and self.pointer is not None:
            offset = address - self.pointer
            if offset >= 0 and offset % size == 0 and offset // size <= 0xFFFF - 2:
                return 2 + offset // size
        self._set_pointer(address)
        return 2

    def _select(self, region: Region) -> None:
        alt = self.region_alt.get(region.name, self.flash_alt)
        if alt == self.alt:
            return
        self._ready_to_upload()
        self.link.claim(self.interface, alt)
        self.alt = alt
        self.pointer = None  # what switching does to the pointer is not documented

    # ------------------------------------------------------------------ memory

    def check_request(self, image: Image, *, diff: bool) -> None:
        """Under read-out protection the ROM erases and writes nothing: say so before
        anything is sent."""
        if self.readout:
            raise TargetError(
                "read-out protection is on: the ROM refuses to erase or write flash",
                READOUT_HINT,
            )

    def read(self, region: Region, address: int, length: int) -> bytes:
        """UPLOAD in blocks of the transfer size from dfuIDLE/dfuUPLOAD-IDLE."""
        self._select(region)
        out = bytearray()
        while len(out) < length:
            here = address + len(out)
            size = min(length - len(out), self.transfer_size)
            want = max(size, UPLOAD_MIN)
            start = min(here, region.end - want)
            block = self._block_for(start, want)
            self._ready_to_upload()
            with self._exchange(f"reading {region.name}", start):
                data = self.requests.upload(block, want)
            self.state = State.UPLOAD_IDLE
            if len(data) != want:
                self.state = State.IDLE
                raise ProtocolError(
                    f"reading {hexaddr(start)}: the device sent {len(data)} of {want} bytes"
                )
            out += data[here - start : here - start + size]
        return bytes(out)

    def write_page(self, region: Region, address: int, data: bytes) -> None:
        """DNLOAD the page in transfer-size blocks; each is written on the GETSTATUS
        after it. The flash must have been erased."""
        if "w" not in region.access:
            raise TargetError(
                f"{region.name} is read-only here: writing option bytes resets the chip, "
                "OTP cannot be erased",
                "`unprotect readout` is the way to change read-out protection",
            )
        self._select(region)
        for offset in range(0, len(data), self.transfer_size):
            chunk = data[offset : offset + self.transfer_size]
            here = address + offset
            block = self._block_for(here, len(chunk))
            self._ready_to_download()
            with self._exchange("writing", here):
                self.requests.dnload(block, chunk)
            self._await("writing", here)

    def erase_units(self, region: Region, start: int, end: int) -> list[tuple[int, int]]:
        if region.name != "flash":
            return super().erase_units(region, start, end)
        return self.flash_layout.units(start, end)

    def erase_range(self, region: Region, start: int, end: int) -> None:
        """``41 ADDRESS`` for each page or sector of [start, end)."""
        units = self.erase_units(region, start, end)
        if region.name != "flash" or not units:
            raise TargetError(f"nothing to erase at {hexaddr(start)}-{hexaddr(end - 1)}")
        if units[0][0] != start or units[-1][1] != end:
            raise TargetError(
                f"{hexaddr(start)}-{hexaddr(end - 1)} does not start and end on page or "
                "sector boundaries"
            )
        for low, _ in units:
            segment = self.flash_layout.segment_at(low)
            if segment is None or not segment.erasable:
                raise TargetError(f"the device says {hexaddr(low)} cannot be erased")
        self._select(region)
        erased: list[int] = []
        try:
            for low, _ in units:
                self._command(struct.pack("<BI", ERASE, low), "erasing", low)
                erased.append(low)
        except FlashshError as exc:
            if erased:
                done = f"{hexaddr(erased[0])}-{hexaddr(units[len(erased) - 1][1] - 1)}"
                raise type(exc)(f"{exc.message}; erased before that: {done}", exc.hint) from exc
            raise
        finally:
            self.pointer = None  # whether an erase moves the pointer is not documented

    def erase_chip(self) -> None:
        """Mass erase (``41`` alone). The STM32F405 says 100 ms for up to ~32 s of work,
        so a late answer is waited for up to 35 s."""
        if Capability.CHIP_ERASE not in self.capabilities:
            raise UnsupportedError("a mass erase would take the bootloader with it")
        self._select(self._map.flash)
        try:
            self._command(bytes([ERASE]), "mass erase", patience=MASS_ERASE_PATIENCE)
        finally:
            self.pointer = None

    # ------------------------------------------------------------------ leaving

    def start_application(self) -> None:
        """Leave DFU to the application start (or the last ``go`` address)."""
        address = self.jump_address if self.jump_address is not None else self._map.app_start
        self._leave(address)

    def go(self, address: int) -> None:
        """Leave DFU by jumping to the vector table at ``address``."""
        self._leave(address)
        self.jump_address = address

    def _leave(self, address: int) -> None:
        """Set the pointer, then a zero-length DNLOAD; the GETSTATUS after it answers
        dfuMANIFEST and the device leaves the bus (AN2662 §4.5.5). A device already
        gone, or refusing, at that GETSTATUS has left too."""
        self._set_pointer(address)
        try:
            self.requests.dnload(2, b"")  # dfu-util uses block 2, pydfu 0; both leave
        except DeviceGone:
            return  # gone already: it left
        except FlashshError as exc:
            raise self._explain(exc, "leaving DFU", address) from exc
        self.state = None
        self.pointer = None
        for _ in range(20):
            try:
                reply = self._status()
            except DeviceGone:
                return
            except FlashshError as exc:
                if _is_stall_or_silence(exc):
                    return  # the ROM let go of USB before it answered
                raise
            if reply.state in (State.MANIFEST, State.MANIFEST_SYNC, State.MANIFEST_WAIT_RESET):
                return
            if reply.state != State.DNBUSY:
                self._recover()
                if reply.state == State.ERROR:
                    raise self._error(reply.status, "leaving DFU", address)
                raise ProtocolError(
                    f"the device did not leave DFU: it reports {state_name(reply.state)}",
                    "press reset with BOOT0 low to start the application",
                )
            time.sleep(reply.poll_ms / 1000)
        raise ProtocolError("the device stays busy after the leave request", "press reset")

    # ------------------------------------------------------------------ protection

    def read_options(self) -> dict[str, object]:
        """Read-out protection, and the option bytes decoded where the chip is known."""
        if self.readout:
            return {
                "readout_protection": 1,
                "note": "the option bytes cannot be read while read-out protection is on",
            }
        regions = {r.name: r for r in self._map.regions}
        if "options" not in regions:
            return {"readout_protection": None if self.readout is None else 0}
        region = regions["options"]
        raw = self.read(region, region.start, region.size)
        part = self.rom_chip.part if self.rom_chip else None
        if part is not None:
            from flashsh.chips.stm32 import stm32_part
            from flashsh.protocols.stm32_options import decode

            chip = stm32_part(part)
            if chip.option_bytes.address == region.start and chip.option_bytes.size == len(raw):
                return decode(chip, raw)
        return {"address": region.start, "raw": raw.hex(" "), "readout_protection": 0}

    def set_protection(
        self, kind: str, enabled: bool, span: tuple[int, int] | None = None
    ) -> dict[str, object]:
        """Read Unprotect (``92``): the ROM mass-erases the flash, clears read-out
        protection and resets; flashsh waits for it to come back."""
        if kind != "readout" or enabled:
            raise UnsupportedError(
                f"the DfuSe ROM cannot {'set' if enabled else 'clear'} {kind} protection; "
                "it only has Read Unprotect",
                "use the UART ROM bootloader (--protocol stm32) or STM32CubeProgrammer",
            )
        if self.readout is False:
            return {"kind": kind, "enabled": False, "changed": False, "readout_protection": 0}
        self._ready_to_download()
        with self._exchange("read unprotect"):
            self.requests.dnload(0, bytes([READ_UNPROTECT]))
        try:
            reply = self._status()
        except FlashshError as exc:
            if not (isinstance(exc, DeviceGone) or _is_stall_or_silence(exc)):
                raise
        else:
            if reply.state == State.ERROR:
                self._recover()
                raise self._error(reply.status, "read unprotect", None)
        self.state = None
        found = self.link.follow(lambda info: info.kind in self.kinds, UNPROTECT_TIMEOUT,
                                 "STM32 ROM DFU after the read unprotect")  # fmt: skip
        self.link.reopen(found)
        self.start()
        level = {True: 1, False: 0, None: None}[self.readout]
        return {"kind": kind, "enabled": False, "changed": True, "readout_protection": level}


def _read_layouts(link: UsbLink) -> tuple[int, dict[int, Layout]]:
    """The DFU interface number and the parsed layout of each of its alternate settings."""
    layouts: dict[int, Layout] = {}
    number: int | None = None
    for interface in link.interfaces():
        if (interface.bInterfaceClass, interface.bInterfaceSubClass) != (0xFE, 0x01):
            continue
        if number is None:
            number = interface.bInterfaceNumber
        if interface.bInterfaceNumber != number or not interface.iInterface:
            continue
        text = _string_tolerant(link, interface.iInterface)
        if text is None:
            continue
        with suppress(ProtocolError):
            layouts[interface.bAlternateSetting] = parse_layout(text)
    if number is None or not layouts:
        raise ProtocolError(
            f"{link.info.usb_id} has no DfuSe memory layout in its interface strings",
            "it may not be a DfuSe device",
        )
    return number, layouts


def _string_tolerant(link: UsbLink, index: int) -> str | None:
    """A string descriptor taken by the bytes that came, not by its length byte: some
    ROMs (STM32F427) send a length byte that disagrees with the data."""
    try:
        raw = link.control_in(0x80, 6, 0x0300 | index, 0x0409, 255,
                              what="reading a memory layout")  # fmt: skip
    except FlashshError:
        return link.string(index)
    body = raw[2 : 2 + (len(raw) - 2) // 2 * 2]
    return body.decode("utf-16-le", errors="replace").rstrip("\0")
