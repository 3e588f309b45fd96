"""An STK500v2 ISP programmer (STK500, AVRISP, clones) driving a target over SPI.

The programmer holds the target in reset while in programming mode and runs the part's
4-byte serial-programming instructions for each command. Flash can only be erased as a
whole (chip erase); a page is programmed onto whatever it holds, so writes are checked
against the page's current contents. Facts: /work/shared/protocols/stk500v2.md A5-A8, C.
"""

from __future__ import annotations

import math
import time

from flashsh.chips.isp import EnterProgmode, FuseAccess, IspPart, PagedMemory, isp_defaults
from flashsh.errors import ProtocolError, TargetError
from flashsh.numbers import hexaddr
from flashsh.protocols.stk500v2_wire import (
    CMD_CHIP_ERASE_ISP,
    CMD_ENTER_PROGMODE_ISP,
    CMD_LEAVE_PROGMODE_ISP,
    CMD_PROGRAM_EEPROM_ISP,
    CMD_PROGRAM_FLASH_ISP,
    CMD_PROGRAM_FUSE_ISP,
    CMD_PROGRAM_LOCK_ISP,
    CMD_READ_EEPROM_ISP,
    CMD_READ_FLASH_ISP,
    CMD_READ_FUSE_ISP,
    CMD_READ_LOCK_ISP,
    CMD_READ_OSCCAL_ISP,
    CMD_READ_SIGNATURE_ISP,
    CMD_SET_PARAMETER,
    PARAM_RESET_POLARITY,
    PARAM_SCK_DURATION,
    PARAM_VTARGET,
    READ_BLOCK,
    CommandFailed,
    MessageLink,
    load_address,
    read_data,
)

# STK500/AVRISP SCK_DURATION: the firmware's 7.3728 MHz clock; durations 0-3 are fixed
# steps, longer ones follow period = (d + 10/12) * 24 / 7.3728 MHz (stk500v2.md A5).
STK500_XTAL = 7_372_800
STK500_SCK_STEPS = {0: 1_843_200, 1: 460_800, 2: 115_200, 3: 57_600}
# AVRISP mkII: the parameter indexes a fixed list; only its first entries are known here.
MKII_SCK = [8_000_000, 4_000_000, 2_000_000, 1_000_000, 500_000, 250_000, 125_000, 96_386,
            89_888]  # fmt: skip
#: A factory-fresh AVR runs at 1 MHz and takes SCK below f/4; 125 kHz leaves margin.
SAFE_SCK_HZ = 125_000
#: Tried once when Programming Enable fails at the safe clock (128 kHz or 32 kHz parts).
SLOW_SCK_HZ = 8_000
#: The first ISP instruction byte of READ_*_ISP answers comes back as the 4th byte.
RET_ADDR = 4
#: avrdude waits this after each fuse/lock write: some programmers read back too early.
FUSE_SETTLE = 0.01
BASE_TIMEOUT = 1.0
ISP_BITS_PER_BYTE = 32  # every byte moves as one 4-byte instruction


def is_mk2(sign_on: str) -> bool:
    return sign_on.startswith("AVRISP_MK2")


def _divider(sign_on: str) -> int:
    # The serial AVRISP runs its SCK at half the STK500's rate for the same value (avrdude).
    return 2 if sign_on == "AVRISP_2" else 1


def sck_hz(sign_on: str, duration: int) -> float | None:
    """The ISP clock a SCK_DURATION value gives on this kind of programmer."""
    if is_mk2(sign_on):
        return MKII_SCK[duration] if duration < len(MKII_SCK) else None
    if duration in STK500_SCK_STEPS:
        return STK500_SCK_STEPS[duration] / _divider(sign_on)
    return STK500_XTAL / (24 * (duration + 10 / 12)) / _divider(sign_on)


def sck_duration(sign_on: str, hz: float) -> int | None:
    """The fastest SCK_DURATION whose clock does not exceed ``hz``; None if unknown."""
    if is_mk2(sign_on):
        return next((i for i, f in enumerate(MKII_SCK) if f <= hz), None)
    hz *= _divider(sign_on)
    if hz >= STK500_SCK_STEPS[3]:
        return next(d for d, step in STK500_SCK_STEPS.items() if step <= hz)
    return min(254, math.ceil(STK500_XTAL / (24 * hz) - 10 / 12))


def hz_text(hz: float | None) -> str:
    if hz is None:
        return "unknown"
    return f"{hz / 1e6:.4g} MHz" if hz >= 1e6 else f"{hz / 1e3:.4g} kHz"


def enter_progmode_body(p: EnterProgmode) -> bytes:
    """CMD_ENTER_PROGMODE_ISP body (AVR068 §5.2.1)."""
    timing = [p.timeout, p.stab_delay, p.cmdexe_delay, p.synch_loops, p.byte_delay]
    return bytes([CMD_ENTER_PROGMODE_ISP, *timing, p.poll_value, p.poll_index]) + p.command


def read_byte(wire: MessageLink, command: int, instruction: bytes) -> int:
    """One READ_FUSE/LOCK/SIGNATURE/OSCCAL_ISP: answer ``id 00 value 00``."""
    answer = wire.command(bytes([command, RET_ADDR]) + instruction)
    if len(answer) != 4:
        raise ProtocolError(f"answer to a byte read has {len(answer)} bytes, expected 4")
    return answer[2]


class IspProgrammer:
    """Target access through the programmer; ``part`` is set once the chip is known."""

    def __init__(self, wire: MessageLink, sign_on: str) -> None:
        self.wire = wire
        self.sign_on = sign_on
        self.part: IspPart = isp_defaults()
        self.vtarget: float | None = None
        self.sck: int | None = None
        self.sck_note = ""
        self.in_progmode = False
        #: After a chip erase every page is blank until written.
        self._blank: bool = False
        self._written: set[int] = set()
        #: The chip's EEPROM page: one CMD_PROGRAM_EEPROM_ISP writes at most this much.
        self.eeprom_page = 4

    # ------------------------------------------------------------------ programmer

    def set_parameter(self, param: int, value: int) -> None:
        self.wire.command(bytes([CMD_SET_PARAMETER, param, value]))

    def configure(self) -> None:
        """Read VTARGET and the ISP clock; slow the clock down to one a 1 MHz part takes."""
        vtarget = self.wire.parameter(PARAM_VTARGET)
        self.vtarget = vtarget / 10 if vtarget is not None else None
        if self.sign_on.startswith(("STK500", "STK600")):
            # AVR-style active-low reset; avrdude sets it on these before programming mode.
            self.set_parameter(PARAM_RESET_POLARITY, 1)
        self.sck = self.wire.parameter(PARAM_SCK_DURATION)
        self.set_sck(SAFE_SCK_HZ, only_if_faster=True)

    def set_sck(self, hz: float, *, only_if_faster: bool = False) -> bool:
        """Set the ISP clock to at most ``hz``; return whether it changed."""
        if self.sck is None:
            return False
        now = sck_hz(self.sign_on, self.sck)
        wanted = sck_duration(self.sign_on, hz)
        if wanted is None or wanted == self.sck or (only_if_faster and now and now <= hz):
            return False
        self.set_parameter(PARAM_SCK_DURATION, wanted)
        self.sck_note = f"lowered from {hz_text(now)} for safety"
        self.sck = wanted
        return True

    @property
    def sck_hz(self) -> float | None:
        return sck_hz(self.sign_on, self.sck) if self.sck is not None else None

    def _timeout(self, size: int, delay_ms: int = 0) -> float:
        spi = size * ISP_BITS_PER_BYTE / (self.sck_hz or SLOW_SCK_HZ)
        return BASE_TIMEOUT + 2 * spi + delay_ms / 1000

    # ------------------------------------------------------------------ programming mode

    def enter(self) -> None:
        """CMD_ENTER_PROGMODE_ISP with the part's timing; a slower clock is tried once."""
        try:
            self._enter()
        except TargetError:
            if not self.set_sck(SLOW_SCK_HZ):
                raise
            self.sck_note = f"lowered to {hz_text(self.sck_hz)}: the target did not answer faster"
            self._enter()

    def _enter(self) -> None:
        p = self.part.enter_progmode
        wait = (p.timeout + p.stab_delay + p.cmdexe_delay) / 1000
        try:
            self.wire.command(enter_progmode_body(p), BASE_TIMEOUT + wait)
        except CommandFailed as exc:
            volts = f"{self.vtarget:.1f} V" if self.vtarget is not None else "not reported"
            raise TargetError(
                f"the target chip did not enter ISP programming mode ({exc.message})",
                f"check the ISP cable, target power (VTARGET {volts}) and that the chip "
                "has a running clock",
            ) from exc
        self.in_progmode = True

    def leave(self) -> None:
        delays = [self.part.leave_pre_delay, self.part.leave_post_delay]
        self.wire.command(bytes([CMD_LEAVE_PROGMODE_ISP, *delays]))
        self.in_progmode = False

    def chip_erase(self) -> None:
        """CMD_CHIP_ERASE_ISP, wait the part's erase time, then enter programming mode again
        (the erase ends it on some parts, and avrdude does the same)."""
        part = self.part
        body = bytes([CMD_CHIP_ERASE_ISP, part.chip_erase_ms, part.chip_erase_poll_method])
        self.wire.command(body + part.chip_erase_command, BASE_TIMEOUT + part.chip_erase_ms / 1000)
        time.sleep(part.chip_erase_ms / 1000)
        self._enter()
        self._blank = True
        self._written.clear()

    # ------------------------------------------------------------------ single bytes

    def _read_byte(self, command: int, instruction: bytes) -> int:
        return read_byte(self.wire, command, instruction)

    def signature(self) -> bytes:
        return bytes(
            self._read_byte(CMD_READ_SIGNATURE_ISP, self.part.signature_instruction(i))
            for i in range(3)
        )

    def calibration(self) -> int | None:
        try:
            return self._read_byte(CMD_READ_OSCCAL_ISP, self.part.calibration_read)
        except CommandFailed:
            return None

    def read_fuse(self, name: str) -> int:
        return self._read_byte(CMD_READ_FUSE_ISP, self._fuse(name).read)

    def read_lock(self) -> int:
        return self._read_byte(CMD_READ_LOCK_ISP, self.part.lock.read)

    def write_fuse(self, name: str, value: int) -> None:
        self._write_byte(CMD_PROGRAM_FUSE_ISP, self._fuse(name), value)

    def write_lock(self, value: int) -> None:
        self._write_byte(CMD_PROGRAM_LOCK_ISP, self.part.lock, value)

    def _fuse(self, name: str) -> FuseAccess:
        try:
            return self.part.fuses[name]
        except KeyError:
            known = ", ".join(self.part.fuses)
            raise TargetError(f"no fuse {name!r} on this chip", f"fuses: {known}") from None

    def _write_byte(self, command: int, access: FuseAccess, value: int) -> None:
        """Program a fuse or lock byte and give the chip time to store it. The programmer
        answers OK without checking anything: callers read the byte back."""
        self.wire.command(bytes([command]) + access.write_instruction(value))
        time.sleep(self.part.fuse_write_ms / 1000 + FUSE_SETTLE)

    # ------------------------------------------------------------------ memories

    def read(self, memory: PagedMemory, command: int, address: int, length: int) -> bytes:
        flash = command == CMD_READ_FLASH_ISP
        start = address & ~1 if flash else address
        end = address + length
        end += end & 1 if flash else 0
        out = bytearray()
        for block in range(start, end, READ_BLOCK):
            size = min(READ_BLOCK, end - block)
            where = block // 2 if flash else block
            answer = self.wire.transact(
                [
                    load_address(where, extended=flash and memory.load_extended_address),
                    bytes([command, size >> 8, size & 0xFF, memory.read]),
                ],
                self._timeout(size),
            )[1]
            out += read_data(answer, size)
        return bytes(out[address - start : address - start + length])

    def read_flash(self, address: int, length: int) -> bytes:
        return self.read(self.part.flash, CMD_READ_FLASH_ISP, address, length)

    def read_eeprom(self, address: int, length: int) -> bytes:
        return self.read(self.part.eeprom, CMD_READ_EEPROM_ISP, address, length)

    def write_flash_page(self, address: int, data: bytes) -> None:
        """Program one page onto what it holds. Only a chip erase makes pages blank, so a
        page whose bits would have to go from 0 to 1 is refused before anything is sent."""
        current = b"\xff" * len(data)
        if not self._blank or address in self._written:
            current = self.read_flash(address, len(data))
            if any(c & d != d for c, d in zip(current, data, strict=True)):
                raise TargetError(
                    f"flash page {hexaddr(address)} is not erased, and ISP cannot erase "
                    "single pages",
                    "run `mass_erase` first (it erases the whole chip), then program",
                )
        self._written.add(address)
        if current != data:  # blank pages stay blank without a command
            self._program(self.part.flash, CMD_PROGRAM_FLASH_ISP, address // 2, data)

    def write_eeprom(self, address: int, data: bytes) -> None:
        """EEPROM pages erase themselves as they are written; only pages that differ go."""
        current = self.read_eeprom(address, len(data))
        page = self.eeprom_page
        for offset in range(0, len(data), page):
            chunk = data[offset : offset + page]
            if chunk != current[offset : offset + page]:
                self._program(self.part.eeprom, CMD_PROGRAM_EEPROM_ISP, address + offset, chunk)

    def _program(self, memory: PagedMemory, command: int, where: int, data: bytes) -> None:
        header = bytes(
            [
                command,
                len(data) >> 8,
                len(data) & 0xFF,
                memory.mode | 0x80,  # bit 7: write the page after loading it
                memory.delay_ms,
                memory.load_page,
                memory.write_page,
                memory.read,
                *memory.poll,
            ]
        )
        extended = command == CMD_PROGRAM_FLASH_ISP and memory.load_extended_address
        self.wire.transact(
            [load_address(where, extended=extended), header + data],
            self._timeout(len(data), memory.delay_ms),
        )
