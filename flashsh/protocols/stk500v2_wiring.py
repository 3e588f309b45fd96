"""Flash and EEPROM through Arduino's stk500v2 bootloader (Mega 2560, avrdude -cwiring).

Three quirks of that bootloader shape everything here (stk500v2.md B2, B4, B5):

* CMD_PROGRAM_FLASH_ISP erases the page at an internal pointer that starts at 0, moves
  one page per command and is reset only by CMD_CHIP_ERASE_ISP, not the page it writes.
  So this module keeps a model of the pointer, rewrites skipped pages with their own
  contents to move it forward, and resets it to go back. Pages from ``unerased_from``
  up are never erased and can only be written where they are still blank.
* Older builds start a text monitor on three 0x21 ("!!!") anywhere in the stream. A page
  holding them is written in two passes whose data never has three in a row; the second
  pass moves the pointer one page further, so the page it erases is read first and
  written back later ("pending"), unless it is blank or written next anyway.
* CMD_READ_EEPROM_ISP reads from twice the loaded address. Reads therefore start at 0 and
  continue by the bootloader's own auto-increment, which is right on every build.
"""

from __future__ import annotations

import contextlib

from flashsh.chips import AvrPart
from flashsh.chips.isp import IspPart
from flashsh.errors import ProtocolError, TargetError
from flashsh.numbers import hexaddr
from flashsh.protocols.stk500v2_wire import (
    CMD_CHIP_ERASE_ISP,
    CMD_PROGRAM_EEPROM_ISP,
    CMD_PROGRAM_FLASH_ISP,
    CMD_READ_EEPROM_ISP,
    CMD_READ_FLASH_ISP,
    MONITOR_TRIGGER,
    READ_BLOCK,
    CommandFailed,
    MessageLink,
    load_address,
    read_data,
)

#: Bytes per CMD_PROGRAM_EEPROM_ISP; the bootloader writes each byte (about 3.4 ms).
EEPROM_CHUNK = 64
EEPROM_BYTE_SECONDS = 0.0036
BASE_TIMEOUT = 1.0


def monitor_safe_passes(data: bytes) -> list[bytes]:
    """Split a page into one or two writes, none holding three 0x21 bytes in a row or
    ending in two (the message checksum could be the third).

    Every third byte of a run of 0x21, and the last byte of a page ending in two, is left
    0xFF (unprogrammed) in the first pass and programmed alone in the second, where all
    other bytes are 0xFF and so change nothing.
    """
    if MONITOR_TRIGGER not in data and not data.endswith(b"!!"):
        return [data]
    first = bytearray(data)
    second = bytearray(b"\xff" * len(data))
    run = 0
    for i, byte in enumerate(data):
        run = run + 1 if byte == 0x21 else 0
        if run == 3 or (run == 2 and i == len(data) - 1):
            first[i], second[i], run = 0xFF, 0x21, 0
    return [bytes(first), bytes(second)]


def monitor_safe_chunks(data: bytes, limit: int) -> list[tuple[int, bytes]]:
    """Cut ``data`` into (offset, chunk) pieces of at most ``limit`` bytes with no two
    0x21 in a row inside a piece, so that no message holds three (its checksum included).
    EEPROM takes any length per message, so runs are simply sent a byte at a time."""
    chunks: list[tuple[int, bytes]] = []
    start = 0
    for i in range(1, len(data)):
        if i - start == limit or data[i] == data[i - 1] == 0x21:
            chunks.append((start, data[start:i]))
            start = i
    chunks.append((start, data[start:]))
    return chunks


class WiringMemory:
    """Memory access through the bootloader, with its erase pointer modelled host-side."""

    def __init__(
        self, wire: MessageLink, part: AvrPart, isp: IspPart, unerased_from: int, baud: int
    ) -> None:
        self.wire = wire
        self.part = part
        self.isp = isp
        self.page = part.flash_page
        #: APP_END: the bootloader erases only pages below this address.
        self.unerased_from = unerased_from
        self.baud = baud
        self.forget()

    def forget(self) -> None:
        """Drop everything known about the bootloader's state (after a reset)."""
        #: The next page CMD_PROGRAM_FLASH_ISP will erase; None until reset by CHIP_ERASE.
        self.erase_next: int | None = None
        #: Pages known to be erased and not written since.
        self.clean: set[int] = set()
        #: Pages the pointer erased ahead of time, with the contents they must get back.
        self.pending: dict[int, bytes] = {}
        #: True EEPROM address the next CMD_READ_EEPROM_ISP continues at, if known.
        self.eeprom_next: int | None = None

    def _timeout(self, size: int, work: float = 0.0) -> float:
        return BASE_TIMEOUT + 2 * (size + 16) * 10 / max(self.baud, 1200) + work

    # ------------------------------------------------------------------ flash

    def _extended(self) -> bool:
        return self.isp.flash.load_extended_address

    def read_flash(self, address: int, length: int) -> bytes:
        start = address & ~1  # the bootloader reads whole words
        end = address + length + ((address + length) & 1)
        out = bytearray()
        for block in range(start, end, READ_BLOCK):
            size = min(READ_BLOCK, end - block)
            body = bytes([CMD_READ_FLASH_ISP, size >> 8, size & 0xFF, self.isp.flash.read])
            answer = self.wire.transact(
                [load_address(block // 2, extended=self._extended()), body],
                self._timeout(size),
            )[1]
            out += read_data(answer, size)
        self.eeprom_next = None
        data = bytes(out[address - start : address - start + length])
        return self._with_pending(address, data)

    def _with_pending(self, address: int, data: bytes) -> bytes:
        """Show pages waiting to be written back as they will be, not as erased now."""
        if not self.pending:
            return data
        out = bytearray(data)
        for page, content in self.pending.items():
            lo, hi = max(page, address), min(page + self.page, address + len(data))
            if lo < hi:
                out[lo - address : hi - address] = content[lo - page : hi - page]
        return bytes(out)

    def write_flash_page(self, address: int, data: bytes) -> None:
        if address % self.page or len(data) != self.page:
            raise TargetError(f"unaligned flash write at {hexaddr(address)}")
        if address >= self.unerased_from:
            self._write_unerasable(address, data)
            return
        self._point_at(address)
        # The page gets new contents: whatever was saved for it is void.
        self.pending.pop(address, None)
        for image in monitor_safe_passes(data):
            self._program(address, image)

    def _write_unerasable(self, address: int, data: bytes) -> None:
        if self.erase_next is None:
            self._reset_pointer()  # an unknown pointer would erase an unknown page
        if address not in self.clean:
            current = self.read_flash(address, self.page)
            if any(c & d != d for c, d in zip(current, data, strict=True)):
                lo = self.unerased_from
                raise TargetError(
                    f"flash page {hexaddr(address)} cannot be erased through this bootloader "
                    f"(it erases only below {hexaddr(lo)})",
                    f"keep the application below {hexaddr(lo)}, or program it by ISP",
                )
        for image in monitor_safe_passes(data):
            self._program(address, image)

    def _point_at(self, address: int) -> None:
        """Make sure the page at ``address`` is erased when it is programmed: it is clean
        already, or the pointer is brought to it (back to 0 first if it is past it)."""
        if self.erase_next is None:
            self._reset_pointer()
        if address in self.clean:
            return
        if address < self.erase_next:
            self.finish()
            if address in self.clean:
                return
            self._reset_pointer()
        while True:
            # Move the pointer on by rewriting each page it erases with its own contents,
            # and give pages erased ahead of it on the way theirs back.
            behind = [page for page in self.pending if page < address]
            if behind:
                page = min(behind)
                content = self.pending.pop(page)
            elif self.erase_next < address:
                page = self.erase_next
                content = b"\xff" * self.page if page in self.clean else self._read_raw(page)
            else:
                break
            for image in monitor_safe_passes(content):
                self._program(page, image)

    def _reset_pointer(self) -> None:
        """CMD_CHIP_ERASE_ISP: erases nothing here, but sets the pointer back to 0."""
        body = bytes([CMD_CHIP_ERASE_ISP, self.isp.chip_erase_ms, 0])
        # Current builds answer FAILED on purpose (nothing was erased), older ones OK.
        with contextlib.suppress(CommandFailed):
            self.wire.command(body + self.isp.chip_erase_command)
        self.erase_next = 0

    def _read_raw(self, page: int) -> bytes:
        pending = self.pending
        self.pending = {}
        try:
            return self.read_flash(page, self.page)
        finally:
            self.pending = pending

    def _program(self, address: int, data: bytes) -> None:
        """One CMD_PROGRAM_FLASH_ISP: the bootloader erases the page at the pointer, then
        programs ``address``. A page the pointer erases out of turn is saved first."""
        victim = self.erase_next
        if victim is None:
            raise ProtocolError("flash write before the erase pointer was set")
        if self._must_save(victim, address):
            saved = self._read_raw(victim)
            if saved != b"\xff" * self.page:
                self.pending[victim] = saved
        flash = self.isp.flash
        body = bytes(
            [
                CMD_PROGRAM_FLASH_ISP,
                len(data) >> 8,
                len(data) & 0xFF,
                flash.mode | 0x80,
                flash.delay_ms,
                flash.load_page,
                flash.write_page,
                flash.read,
                *flash.poll,
            ]
        )
        self.wire.transact(
            [load_address(address // 2, extended=self._extended()), body + data],
            self._timeout(len(data), work=0.02),
        )
        self.eeprom_next = None
        if victim < self.unerased_from:
            self.clean.add(victim)
            self.erase_next = victim + self.page
        self.clean.discard(address)

    def _must_save(self, victim: int, address: int) -> bool:
        """Whether the page the pointer is about to erase holds contents nobody rewrites."""
        return (
            victim != address
            and victim < self.unerased_from
            and victim not in self.clean
            and victim not in self.pending
        )

    def adopt(self, old: WiringMemory) -> None:
        """Take over the pages a previous connection left waiting to be written back."""
        self.pending = dict(old.pending)
        self.clean |= old.clean

    def finish(self) -> None:
        """Write back every page the pointer erased ahead of time.

        Each write-back erases the next page in turn, so this runs forward until the
        pointer reaches a blank page or the end of the erasable area.
        """
        if self.pending and self.erase_next is None:
            self._reset_pointer()
        while self.pending:
            page = min(self.pending)
            content = self.pending.pop(page)
            if page not in self.clean:
                raise ProtocolError(f"lost track of flash page {hexaddr(page)}")
            for image in monitor_safe_passes(content):
                self._program(page, image)

    # ------------------------------------------------------------------ EEPROM

    def read_eeprom(self, address: int, length: int) -> bytes:
        if self.eeprom_next is None or self.eeprom_next > address:
            self.wire.command(load_address(0))
            self.eeprom_next = 0
        while self.eeprom_next < address:
            self._read_eeprom_block(min(READ_BLOCK, address - self.eeprom_next))
        out = bytearray()
        while len(out) < length:
            out += self._read_eeprom_block(min(READ_BLOCK, length - len(out)))
        return bytes(out)

    def _read_eeprom_block(self, size: int) -> bytes:
        body = bytes([CMD_READ_EEPROM_ISP, size >> 8, size & 0xFF, self.isp.eeprom.read])
        try:
            data = read_data(self.wire.command(body, self._timeout(size)), size)
        except Exception:
            self.eeprom_next = None
            raise
        assert self.eeprom_next is not None
        self.eeprom_next += size
        return data

    def write_eeprom(self, address: int, data: bytes) -> None:
        eeprom = self.isp.eeprom
        self.eeprom_next = None
        if not data:
            return
        for offset, chunk in monitor_safe_chunks(data, EEPROM_CHUNK):
            header = bytes(
                [
                    CMD_PROGRAM_EEPROM_ISP,
                    len(chunk) >> 8,
                    len(chunk) & 0xFF,
                    eeprom.mode | 0x80,
                    eeprom.delay_ms,
                    eeprom.load_page,
                    eeprom.write_page,
                    eeprom.read,
                    *eeprom.poll,
                ]
            )
            # EEPROM takes the byte address, which this bootloader handles right on writes.
            self.wire.transact(
                [load_address(address + offset), header + chunk],
                self._timeout(len(chunk), work=len(chunk) * EEPROM_BYTE_SECONDS),
            )
