"""An AVR as an ISP programmer sees it: RESET, SCK, MOSI in, MISO out.

The programmer hands over SPI bytes; the target decodes the 4-byte serial programming
instructions itself (docs/protocols/stk500v2.md A8; the "Serial Programming Instruction
Set" table of each datasheet), so a wrong instruction byte from the host shows up as a
wrong result. What the model keeps from the datasheets' "Memory Programming" chapters:

* Serial programming works only with RESET held low, SPIEN programmed, a running clock
  and SCK high and low phases longer than 2 CPU clocks (3 at 12 MHz and more). On the
  ATmega168/328P a programmed RSTDISBL or DWEN takes the RESET pin away from ISP.
* Programming Enable is accepted 20 ms or more after RESET went low; then the second
  instruction byte (0x53) comes back while the third goes out. Every byte the target
  receives stays in its shift register and goes out with the next one, except the data
  byte of a read instruction.
* Flash is written a page at a time from a page buffer and programming only clears bits,
  so a page written without a chip erase ANDs into the old contents. EEPROM cells are
  erased as they are written.
* Each write keeps the part busy for its time (docs/protocols/avr-parts.md "Write times"); an
  instruction other than Poll RDY/BSY arriving meanwhile is not carried out.
* Lock bits: LB mode 2 (LB1 programmed) stops flash, EEPROM and fuse programming; mode 3
  (LB2 too) also stops flash and EEPROM reads, which return 0xFF in this model (the
  datasheets only say the memories can no longer be verified), and freezes the boot
  lock bits. Lock bits go back to 1 only through chip erase, which also erases flash and,
  unless EESAVE is programmed, EEPROM. Fuses survive chip erase.
* Unused fuse and lock bits read 1. Fuses are latched when the part leaves reset (and at
  power-up): a new clock setting counts only after programming mode ends. SPIEN cannot be
  changed through ISP.

Time here is the target's own, in seconds: the programmer moves it on by the delays it
waits and by the time its SPI transfers take, whatever the simulator's throttle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from flashsh.chips import AvrPart
from flashsh.sims.memory import ChipMemory

ERASED = 0xFF

# Serial programming instruction first bytes (datasheet "Serial Programming Instruction
# Set"; docs/protocols/stk500v2.md A8). Names follow the datasheet's operation names.
PROGRAMMING_ENABLE = (0xAC, 0x53)
WRITE_CMD = 0xAC  # chip erase, fuse and lock writes: the second byte says which
CHIP_ERASE_2 = 0x80
WRITE_LFUSE_2 = 0xA0
WRITE_HFUSE_2 = 0xA8
WRITE_EFUSE_2 = 0xA4
WRITE_LOCK_2 = 0xE0
POLL_RDY_BSY = 0xF0
LOAD_EXTENDED_ADDRESS = 0x4D
LOAD_PROGRAM_PAGE_LOW = 0x40
LOAD_PROGRAM_PAGE_HIGH = 0x48
WRITE_PROGRAM_PAGE = 0x4C
READ_PROGRAM_LOW = 0x20
READ_PROGRAM_HIGH = 0x28
READ_EEPROM = 0xA0
WRITE_EEPROM = 0xC0
LOAD_EEPROM_PAGE = 0xC1
WRITE_EEPROM_PAGE = 0xC2
READ_LOCK = (0x58, 0x00)
READ_SIGNATURE = 0x30
READ_LFUSE = (0x50, 0x00)
READ_HFUSE = (0x58, 0x08)
READ_EFUSE = (0x50, 0x08)
READ_CALIBRATION = 0x38

# Fuse and lock bits the model acts on (docs/protocols/avr-parts.md section 3).
CKDIV8 = 0x80  # low fuse
SPIEN = 0x20  # high fuse, every part here
EESAVE = 0x08  # high fuse, every part here
RSTDISBL = 0x80  # high fuse, ATmega168/328P
DWEN = 0x40  # high fuse, ATmega168/328P
LB1 = 0x01
LB2 = 0x02
BLB_BITS = 0x3C
LOCK_MASK = 0x3F

# Datasheet "Serial Programming": wait at least 20 ms after RESET goes low.
ENABLE_AFTER_RESET = 0.020
# Lowest supply voltage of the 1.8 V parts; below it the chip does not run.
VCC_MIN = 1.8
# RC oscillator frequencies (CKSEL 0010 and 0011, datasheet "Clock Sources").
RC_8MHZ = 8_000_000.0
RC_128KHZ = 128_000.0
LOW_FREQUENCY_CRYSTAL = 32768.0


@dataclass(frozen=True)
class PartFuses:
    """Factory fuse and lock values and write times of one part (docs/protocols/avr-parts.md §5 and
    "Write times"; avrdude.conf ``initval`` and ``min_write_delay``)."""

    lfuse: int
    hfuse: int
    efuse: int
    efuse_mask: int
    lock: int = 0xFF
    #: RSTDISBL and DWEN in the high fuse (the debugWIRE parts).
    reset_fuses: bool = False
    fuse_write_ms: float = 9.0
    eeprom_write_ms: float = 9.0
    flash_write_ms: float = 4.5


PART_FUSES: dict[str, PartFuses] = {
    "atmega168": PartFuses(0x62, 0xDF, 0xF9, 0x07, reset_fuses=True, fuse_write_ms=4.5,
                           eeprom_write_ms=3.6),
    "atmega328p": PartFuses(0x62, 0xD9, 0xFF, 0x07, reset_fuses=True, fuse_write_ms=4.5,
                            eeprom_write_ms=3.6),
    "atmega1280": PartFuses(0x62, 0x99, 0xFF, 0x07),
    "atmega2560": PartFuses(0x62, 0x99, 0xFF, 0x07),
    "atmega1284p": PartFuses(0x62, 0x99, 0xFF, 0x07),
    "at90usb1286": PartFuses(0x5E, 0x99, 0xF3, 0x0F),
    "atmega32u4": PartFuses(0x52, 0x99, 0xF3, 0x0F),
}  # fmt: skip


def clock_hz(lfuse: int, xtal_hz: float) -> float:
    """CPU clock the low fuse selects on a board with a ``xtal_hz`` crystal (0: none).

    CKSEL codes of the classic parts (docs/protocols/avr-parts.md 4.1); the USB parts
    are treated the same. No board here feeds an external clock, so CKSEL 0000 means no
    clock.
    """
    cksel = lfuse & 0x0F
    if cksel == 0b0010:
        f = RC_8MHZ
    elif cksel == 0b0011:
        f = RC_128KHZ
    elif cksel in (0b0000, 0b0001):
        f = 0.0
    elif cksel in (0b0100, 0b0101):
        f = xtal_hz if xtal_hz == LOW_FREQUENCY_CRYSTAL else 0.0
    else:
        f = xtal_hz
    return f if lfuse & CKDIV8 else f / 8


def sck_ok(sck_hz: float, cpu_hz: float) -> bool:
    """Can a part clocked at ``cpu_hz`` follow SCK at ``sck_hz``? Each SCK phase must last
    more than 2 CPU clocks, more than 3 from 12 MHz up."""
    if cpu_hz <= 0:
        return False
    cycles = 3 if cpu_hz >= 12e6 else 2
    return sck_hz * 2 * cycles < cpu_hz


@dataclass
class TargetStats:
    """What the target did, for tests."""

    instructions: int = 0
    chip_erases: int = 0
    page_writes: int = 0
    #: Instructions not carried out: (reason, the four bytes).
    ignored: list[tuple[str, bytes]] = field(default_factory=list)


class AvrTarget:
    """One AVR on the end of an ISP cable."""

    def __init__(
        self,
        part: AvrPart,
        *,
        fuses: tuple[int, int, int] | None = None,
        lock: int | None = None,
        calibration: int = 0x9C,
        xtal_hz: float = 16e6,
        flash_write_ms: float | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.part = part
        self.facts = PART_FUSES[part.key]
        facts = self.facts
        # The memories of an erased chip; ChipMemory puts a boot label in, clear it.
        self.memory = ChipMemory(part, part.boot_sizes[-1], boot_locked=False)
        self.memory.flash[:] = bytes([ERASED]) * part.flash_size
        lfuse, hfuse, efuse = fuses or (facts.lfuse, facts.hfuse, facts.efuse)
        self.lfuse = lfuse & 0xFF
        self.hfuse = hfuse & 0xFF
        self.efuse = (efuse | ~facts.efuse_mask) & 0xFF
        self.lock = ((facts.lock if lock is None else lock) | ~LOCK_MASK) & 0xFF
        self.calibration = calibration
        self.xtal_hz = xtal_hz
        page_ms = facts.flash_write_ms if flash_write_ms is None else flash_write_ms
        self.flash_write = page_ms / 1000
        self._log = log or (lambda _text: None)
        self.stats = TargetStats()
        self.t = 0.0
        self.vcc = 0.0
        self.reset_low = False
        self.reset_low_since = 0.0
        self.enabled = False
        self.busy_until = 0.0
        self.ext_address = 0
        self._frame = bytearray()
        self._shift = 0
        self._page = bytearray([ERASED]) * part.flash_page
        self._eeprom_page: dict[int, int] = {}
        # Fuses as the chip runs with them (latched); see latch().
        self.latched = (self.lfuse, self.hfuse, self.efuse)

    # ------------------------------------------------------------------ pins and time

    def elapse(self, seconds: float) -> None:
        self.t += max(seconds, 0.0)

    def power(self, volts: float) -> None:
        """Set the supply. Powering up latches the fuses, as a power-on reset does."""
        was_on = self.running
        self.vcc = volts
        if self.running and not was_on:
            self.latch()
            self.ext_address = 0
        if not self.running:
            self._leave_programming()

    @property
    def running(self) -> bool:
        return self.vcc >= VCC_MIN

    def set_reset(self, low: bool) -> None:
        """Drive RESET: low holds the part for programming, high lets it run."""
        if low and not self.reset_low:
            self.reset_low_since = self.t
        if not low and self.reset_low:
            # Leaving reset: programming mode ends and new fuse values take effect.
            self._leave_programming()
            self.latch()
        self.reset_low = low
        self._frame.clear()

    def latch(self) -> None:
        self.latched = (self.lfuse, self.hfuse, self.efuse)

    def _leave_programming(self) -> None:
        self.enabled = False
        self._frame.clear()
        self._page[:] = bytes([ERASED]) * len(self._page)
        self._eeprom_page.clear()

    @property
    def cpu_hz(self) -> float:
        return clock_hz(self.latched[0], self.xtal_hz) if self.running else 0.0

    def isp_blocked(self) -> str | None:
        """Why serial programming cannot work at all right now, or None."""
        if not self.running:
            return f"no supply ({self.vcc:.1f} V)"
        hfuse = self.latched[1]
        if hfuse & SPIEN:
            return "SPIEN unprogrammed: serial programming disabled"
        if self.facts.reset_fuses and not hfuse & RSTDISBL:
            return "RSTDISBL programmed: RESET is an I/O pin"
        if self.facts.reset_fuses and not hfuse & DWEN:
            return "DWEN programmed: debugWIRE owns RESET"
        if self.cpu_hz <= 0:
            return "no clock (fuses select a clock source the board does not have)"
        return None

    # ------------------------------------------------------------------ SPI

    def transfer(self, mosi: int, sck_hz: float) -> int:
        """Clock one byte in; return the byte clocked out on MISO at the same time."""
        if not self.reset_low or self.isp_blocked() is not None:
            # Not in programming: MISO is an ordinary pin, the model reads it low.
            return 0x00
        if not sck_ok(sck_hz, self.cpu_hz):
            # Bits sampled wrongly: nothing is understood and nothing useful comes out.
            self._frame.clear()
            return 0x00
        position = len(self._frame)
        out = self._shift
        if position == 2 and not self.enabled:
            # Out of sync, nothing echoes; the 0x53 echo is the sign of synchronisation.
            out = 0x53 if self._enable_ok(self._frame) else 0x00
        elif position == 3 and self.enabled:
            value = self._read(bytes(self._frame))
            if value is not None:
                out = value
        elif not self.enabled:
            out = 0x00
        self._frame.append(mosi)
        self._shift = mosi
        if len(self._frame) == 4:
            instruction = bytes(self._frame)
            self._frame.clear()
            self._execute(instruction)
        return out

    def _enable_ok(self, instruction: bytes | bytearray) -> bool:
        first = tuple(instruction[:2])
        return first == PROGRAMMING_ENABLE and self.t - self.reset_low_since >= ENABLE_AFTER_RESET

    # ------------------------------------------------------------------ instructions

    @property
    def lock_mode(self) -> int:
        """LB protection mode: 1 none, 2 no programming, 3 no programming or reading.
        LB2 alone (not a mode in the datasheets) is taken as the strictest."""
        lb = self.lock & (LB1 | LB2)
        return {0b11: 1, 0b10: 2}.get(lb, 3)

    def busy(self) -> bool:
        return self.t < self.busy_until

    def _word_address(self, high: int, low: int) -> int:
        return ((self.ext_address << 16) | (high << 8) | low) % (self.part.flash_size // 2)

    def _read(self, head: bytes) -> int | None:
        """Data for the 4th byte of a read instruction whose first three bytes are
        ``head``; None for anything that is not a read."""
        op, b2, b3 = head
        if op == POLL_RDY_BSY and b2 == 0x00:
            return 0x01 if self.busy() else 0x00
        reads = {
            READ_LFUSE: lambda: self.lfuse,
            READ_HFUSE: lambda: self.hfuse,
            READ_EFUSE: lambda: self.efuse,
            READ_LOCK: lambda: self.lock,
        }
        if (op, b2) in reads:
            return ERASED if self.busy() else reads[(op, b2)]()
        if op == READ_SIGNATURE:
            index = b3 & 0x03
            if self.busy() or index > 2:
                return ERASED
            return self.part.signature[index]
        if op == READ_CALIBRATION and b3 == 0x00:
            return ERASED if self.busy() else self.calibration
        if op in (READ_PROGRAM_LOW, READ_PROGRAM_HIGH):
            if self.busy() or self.lock_mode == 3:
                return ERASED
            byte = self._word_address(b2, b3) * 2 + (op == READ_PROGRAM_HIGH)
            return self.memory.flash[byte]
        if op == READ_EEPROM:
            if self.busy() or self.lock_mode == 3:
                return ERASED
            return self.memory.eeprom[((b2 << 8) | b3) % self.part.eeprom_size]
        return None

    def _execute(self, ins: bytes) -> None:
        op, b2, b3, b4 = ins
        if not self.enabled:
            if self._enable_ok(ins):
                self.enabled = True
                self._log("target: programming enabled")
            return
        self.stats.instructions += 1
        if self._read(ins[:3]) is not None or (op, b2) == PROGRAMMING_ENABLE:
            return  # reads were answered while the 4th byte went out
        if self.busy():
            self._ignore("busy", ins)
            return
        if op == WRITE_CMD:
            self._write_command(ins)
        elif op == LOAD_EXTENDED_ADDRESS and b2 == 0x00:
            self.ext_address = b3
        elif op in (LOAD_PROGRAM_PAGE_LOW, LOAD_PROGRAM_PAGE_HIGH):
            words = self.part.flash_page // 2
            offset = ((b2 << 8) | b3) % words * 2 + (op == LOAD_PROGRAM_PAGE_HIGH)
            self._page[offset] = b4
        elif op == WRITE_PROGRAM_PAGE:
            self._write_flash_page(self._word_address(b2, b3) * 2, ins)
        elif op == WRITE_EEPROM:
            self._write_eeprom({((b2 << 8) | b3) % self.part.eeprom_size: b4}, ins)
        elif op == LOAD_EEPROM_PAGE:
            self._eeprom_page[b3 % self.part.eeprom_page] = b4
        elif op == WRITE_EEPROM_PAGE:
            base = ((b2 << 8) | b3) % self.part.eeprom_size
            base -= base % self.part.eeprom_page
            loaded = {base + offset: value for offset, value in self._eeprom_page.items()}
            self._eeprom_page.clear()
            self._write_eeprom(loaded, ins)
        else:
            self._ignore("unknown instruction", ins)

    def _write_command(self, ins: bytes) -> None:
        _, b2, _, value = ins
        if b2 & 0xE0 == CHIP_ERASE_2:
            self.chip_erase()
        elif b2 & 0xE0 == WRITE_LOCK_2:
            self._write_lock(value)
        elif b2 in (WRITE_LFUSE_2, WRITE_HFUSE_2, WRITE_EFUSE_2):
            self._write_fuse(b2, value, ins)
        else:
            self._ignore("unknown instruction", ins)

    def _ignore(self, why: str, ins: bytes) -> None:
        self.stats.ignored.append((why, ins))
        self._log(f"target: {ins.hex(' ')} not carried out ({why})")

    def chip_erase(self) -> None:
        mem = self.memory
        mem.flash[:] = bytes([ERASED]) * len(mem.flash)
        # EESAVE acts as soon as it is programmed, not when fuses are latched.
        if self.hfuse & EESAVE:
            mem.eeprom[:] = bytes([ERASED]) * len(mem.eeprom)
        self.lock = 0xFF
        self.stats.chip_erases += 1
        self.busy_until = self.t + self.part.chip_erase_ms / 1000
        self._log("target: chip erased" + ("" if self.hfuse & EESAVE else ", EEPROM kept"))

    def _write_lock(self, value: int) -> None:
        # Mode 3 freezes the boot lock bits (its LB bits are all programmed already).
        allowed = LOCK_MASK & ~BLB_BITS if self.lock_mode == 3 else LOCK_MASK
        # A 0 programs a bit; nothing here can bring a bit back to 1.
        self.lock &= ~(~value & allowed) & 0xFF
        self.busy_until = self.t + self.facts.fuse_write_ms / 1000

    def _write_fuse(self, which: int, value: int, ins: bytes) -> None:
        if self.lock_mode != 1:
            self._ignore("fuses locked by LB1", ins)
            return
        if which == WRITE_LFUSE_2:
            self.lfuse = value
        elif which == WRITE_HFUSE_2:
            # SPIEN is out of reach of serial programming.
            self.hfuse = (value & ~SPIEN) | (self.hfuse & SPIEN)
        else:
            self.efuse = (value | ~self.facts.efuse_mask) & 0xFF
        self.busy_until = self.t + self.facts.fuse_write_ms / 1000

    def _write_flash_page(self, byte_address: int, ins: bytes) -> None:
        page = byte_address - byte_address % self.part.flash_page
        data = bytes(self._page)
        self._page[:] = bytes([ERASED]) * len(self._page)
        if self.lock_mode != 1:
            self._ignore(f"lock mode {self.lock_mode}", ins)
            return
        flash = self.memory.flash
        old = flash[page : page + len(data)]
        flash[page : page + len(data)] = bytes(a & b for a, b in zip(old, data, strict=True))
        self.stats.page_writes += 1
        self.busy_until = self.t + self.flash_write

    def _write_eeprom(self, cells: dict[int, int], ins: bytes) -> None:
        if self.lock_mode != 1:
            self._ignore(f"lock mode {self.lock_mode}", ins)
            return
        for address, value in cells.items():
            self.memory.eeprom[address] = value
        self.busy_until = self.t + self.facts.eeprom_write_ms / 1000
