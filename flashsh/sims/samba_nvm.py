"""NVMCTRL of SAMD21 and SAMD51: page buffer, commands with key 0xA5, BOOTPROT.

SAMD21 (samba.md §8.3): commands go to CTRLA, ADDR holds a half-word address, the page
buffer is 64 bytes, a row of 4 pages is the erase unit, and with CTRLB.MANW = 0 a page is
written when its last location is stored. SAMD51 (§8.4): commands go to CTRLB, ADDR is a
byte address, pages are 512 bytes, an 8 KiB block is the erase unit, WQW programs 16
bytes, CTRLA.WMODE picks automatic writes. On both, a store into flash fills the page
buffer and also sets ADDR (Microchip NVMCTRL "NVM Write": "For each AHB bus write, the
address is stored in the ADDR register"); 8-bit stores into the page buffer are a bus
error ("8-bit writes to the page buffer are not allowed").

Erasing or writing inside the BOOTPROT area (user row, latched at reset) or a locked
region is refused: LOCKE and the error flag (ERROR on SAMD21, INTFLAG.LOCKE on SAMD51),
flash untouched. Programming only clears bits.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from flashsh.sims.samba_bus import BusFault, Context, Registers, covers, merge

NVMCTRL = 0x41004000
USER_ROW = 0x00804000
KEY = 0xA5
ERASED = 0xFF


@dataclass(frozen=True)
class NvmTiming:
    """Busy times in seconds.

    SAMD21: page programming 2.5 ms and row erase 6 ms (SAMD21 datasheet, "NVM
    characteristics" tFPP and tFRE maxima, as quoted from memory of that table:
    UNCONFIRMED here). SAMD51: quad-word write 0.1 ms, page write 2.5 ms, block erase
    20 ms (UNCONFIRMED; chosen so that erasing 496 KiB stays under bossac's 5 s ``X``
    timeout, as it does on real boards)."""

    page_write: float = 0.0025
    erase: float = 0.006
    quad_write: float = 0.0001


D21_TIMING = NvmTiming()
D51_TIMING = NvmTiming(page_write=0.0025, erase=0.020)


class Nvm(ABC):
    """What both controllers share: flash and user row bytes, page buffer, protection."""

    page: int
    erase_unit: int
    lock_region: int

    def __init__(self, ctx: Context, flash: bytearray, user: bytearray, timing: NvmTiming) -> None:
        self.ctx = ctx
        self.flash = flash
        self.user = user
        self.timing = timing
        self.buffer = bytearray([ERASED]) * self.page
        self.loaded = False
        self.busy_until = 0.0
        self.address = 0  # byte address of ADDR (SAMD21 keeps it as half-words)
        self.locks = 0  # bit n = region n locked (run-time state, from the user row)
        self.protected = 0  # bytes at the start of flash BOOTPROT covers
        self.boot_protection_off = False
        self.security = False
        #: (command, byte address, outcome), for tests.
        self.commands: list[tuple[str, int, str]] = []
        self.registers = Registers(NVMCTRL, 0x34, on_read=self._read, on_write=self._write)

    # ------------------------------------------------------------------ reset

    def reset(self) -> None:
        """Latch BOOTPROT and the region locks from the user row, as a reset does."""
        self.protected = self.bootprot_size()
        self.locks = self.user_locks()
        self.boot_protection_off = False
        self.buffer[:] = bytes([ERASED]) * self.page
        self.loaded = False

    @abstractmethod
    def bootprot_size(self) -> int:
        """Bytes BOOTPROT in the user row protects."""

    @abstractmethod
    def user_locks(self) -> int:
        """The region lock bits from the user row."""

    @property
    def ready(self) -> bool:
        return self.ctx.now() >= self.busy_until

    # ------------------------------------------------------------------ memory

    def read(self, address: int, size: int) -> int:
        if address >= USER_ROW:
            at = address - USER_ROW
            return int.from_bytes(self.user[at : at + size], "little")
        return int.from_bytes(self.flash[address : address + size], "little")

    def write(self, address: int, size: int, value: int) -> None:
        """A store into flash or the user row: into the page buffer."""
        if size == 1:
            raise BusFault(f"8-bit store into the NVM page buffer at 0x{address:08X}")
        at = address % self.page
        self.buffer[at : at + size] = value.to_bytes(size, "little")
        self.loaded = True
        self.address = address
        self.after_buffer_write(address, size)

    def after_buffer_write(self, address: int, size: int) -> None:  # noqa: B027
        """Automatic writes (MANW = 0 / WMODE); none unless a controller has them."""

    # ------------------------------------------------------------------ programming

    def refused(self, address: int, length: int) -> str | None:
        """Why erasing or writing ``[address, address+length)`` is refused, if it is."""
        if address >= USER_ROW:
            return None
        if address < self.protected and not self.boot_protection_off:
            return f"inside BOOTPROT ({self.protected} bytes)"
        first = address // self.lock_region
        last = (address + length - 1) // self.lock_region
        if any(self.locks >> n & 1 for n in range(first, last + 1)):
            return "region locked"
        return None

    def target(self, address: int) -> tuple[bytearray, int] | None:
        """The array and index that hold ``address``, None outside both."""
        if USER_ROW <= address < USER_ROW + len(self.user):
            return self.user, address - USER_ROW
        if 0 <= address < len(self.flash):
            return self.flash, address
        return None

    def erase(self, name: str, address: int, unit: int) -> bool:
        start = address - address % unit
        found = self.target(start)
        why = self.refused(start, unit) if found else "address out of range"
        if why or found is None:
            self.fail(name, start, why or "")
            return False
        array, at = found
        array[at : at + unit] = bytes([ERASED]) * unit
        self.done(name, start, self.timing.erase)
        return True

    def program(self, name: str, address: int, length: int, busy: float) -> bool:
        """AND ``length`` bytes of the page buffer (at ``address``'s offset) into flash."""
        start = address - address % length
        found = self.target(start)
        why = self.refused(start, length) if found else "address out of range"
        if why or found is None:
            self.fail(name, start, why or "")
            return False
        array, at = found
        offset = start % self.page
        data = self.buffer[offset : offset + length]
        old = array[at : at + length]
        array[at : at + length] = bytes(a & b for a, b in zip(old, data, strict=True))
        if length == self.page or name in ("WP", "WAP"):
            self.buffer[:] = bytes([ERASED]) * self.page
            self.loaded = False
        self.done(name, start, busy)
        return True

    def done(self, name: str, address: int, busy: float) -> None:
        self.busy_until = self.ctx.later(busy)
        self.commands.append((name, address, "ok"))

    def fail(self, name: str, address: int, why: str) -> None:
        self.commands.append((name, address, why))
        self.ctx.log(f"NVMCTRL {name} at 0x{address:08X} refused: {why}")
        self.flag_lock_error()

    @abstractmethod
    def flag_lock_error(self) -> None:
        """Set the controller's lock-error flags."""

    @abstractmethod
    def _read(self, offset: int, size: int) -> int | None:
        """A register read; None for an unknown offset."""

    @abstractmethod
    def _write(self, offset: int, size: int, value: int) -> None:
        """A register write."""


# ---------------------------------------------------------------------------- SAMD21

D21_CTRLA, D21_CTRLB, D21_PARAM, D21_INTFLAG, D21_STATUS, D21_ADDR, D21_LOCK = (
    0x00,
    0x04,
    0x08,
    0x14,
    0x18,
    0x1C,
    0x20,
)
D21_READY, D21_ERROR = 0x01, 0x02
D21_PROGE, D21_LOCKE, D21_NVME, D21_SB = 0x04, 0x08, 0x10, 0x100
D21_MANW = 1 << 7
D21_COMMANDS = {
    0x02: "ER",
    0x04: "WP",
    0x05: "EAR",
    0x06: "WAP",
    0x0A: "SF",
    0x0F: "WL",
    0x40: "LR",
    0x41: "UR",
    0x42: "SPRM",
    0x43: "CPRM",
    0x44: "PBC",
    0x45: "SSB",
    0x46: "INVALL",
}
#: BOOTPROT (user row bits 2:0) -> protected bytes (samba.md §8.3).
D21_BOOTPROT = {7: 0, 6: 512, 5: 1024, 4: 2048, 3: 4096, 2: 8192, 1: 16384, 0: 32768}


class NvmD21(Nvm):
    page = 64
    erase_unit = 256
    lock_region = 0  # set from the flash size: 16 regions

    def __init__(self, ctx: Context, flash: bytearray, user: bytearray) -> None:
        self.lock_region = len(flash) // 16
        super().__init__(ctx, flash, user, D21_TIMING)
        regs = self.registers
        # CTRLB reset value with MANW = 1 (UNCONFIRMED; both bootloaders and bossac
        # set MANW themselves before writing). PARAM: NVMP pages, PSZ 3 = 64 bytes.
        regs.set(D21_CTRLB, D21_MANW)
        regs.set(D21_PARAM, (3 << 16) | (len(flash) // self.page))
        self.status = 0
        self.intflag_error = False

    def bootprot_size(self) -> int:
        return D21_BOOTPROT[self.user[0] & 7]

    def user_locks(self) -> int:
        # Bytes 6-7 of the user row: one bit per region, 1 = unlocked.
        return ~int.from_bytes(self.user[6:8], "little") & 0xFFFF

    def flag_lock_error(self) -> None:
        self.status |= D21_LOCKE
        self.intflag_error = True

    def _read(self, offset: int, size: int) -> int | None:
        regs = self.registers
        intflag = (D21_READY if self.ready else 0) | (D21_ERROR if self.intflag_error else 0)
        regs.set(D21_INTFLAG, intflag, 1)
        status = self.status | (2 if self.loaded else 0) | (D21_SB if self.security else 0)
        regs.set(D21_STATUS, status, 2)
        regs.set(D21_ADDR, self.address // 2)
        regs.set(D21_LOCK, ~self.locks & 0xFFFF, 2)
        return None

    def _write(self, offset: int, size: int, value: int) -> None:
        regs = self.registers
        written = merge(0, offset, size, value, D21_INTFLAG, 1)
        if covers(offset, size, D21_INTFLAG, 1) and written & D21_ERROR:
            self.intflag_error = False
        if covers(offset, size, D21_STATUS, 2):
            cleared = merge(0, offset, size, value, D21_STATUS, 2)
            self.status &= ~(cleared & (D21_PROGE | D21_LOCKE | D21_NVME))
        if covers(offset, size, D21_ADDR, 4):
            half = merge(self.address // 2, offset, size, value, D21_ADDR, 4)
            self.address = (half & 0x3FFFFF) * 2
        if covers(offset, size, D21_CTRLB, 4):
            regs.set(D21_CTRLB, merge(regs.get(D21_CTRLB), offset, size, value, D21_CTRLB, 4))
        if covers(offset, size, D21_CTRLA, 2):
            self.command(merge(0, offset, size, value, D21_CTRLA, 2))

    def after_buffer_write(self, address: int, size: int) -> None:
        manual = self.registers.get(D21_CTRLB) & D21_MANW
        if not manual and (address % self.page) + size == self.page:
            name = "WAP" if address >= USER_ROW else "WP"
            self.program(name, address, self.page, self.timing.page_write)

    def command(self, value: int) -> None:
        cmd = value & 0x7F
        name = D21_COMMANDS.get(cmd, f"0x{cmd:02X}")
        if value >> 8 != KEY or name.startswith("0x"):
            self.status |= D21_PROGE
            self.intflag_error = True
            self.commands.append((name, self.address, "bad key or command"))
            return
        address = self.address
        if name == "ER":
            self.erase(name, address, self.erase_unit)
        elif name == "WP":
            self.program(name, address, self.page, self.timing.page_write)
        elif name == "EAR":
            if address < USER_ROW:
                self.fail(name, address, "not in the auxiliary space")
            else:
                self.erase(name, address, self.erase_unit)
        elif name == "WAP":
            self.program(name, address, self.page, self.timing.page_write)
        elif name == "PBC":
            self.buffer[:] = bytes([ERASED]) * self.page
            self.loaded = False
            self.done(name, address, 0)
        elif name in ("LR", "UR"):
            bit = 1 << (address // self.lock_region)
            self.locks = self.locks | bit if name == "LR" else self.locks & ~bit
            self.done(name, address, 0)
        elif name == "SSB":
            self.security = True
            self.ctx.log("security bit set")
            self.done(name, address, 0)
        else:
            self.done(name, address, 0)


# ---------------------------------------------------------------------------- SAMD51

D51_CTRLA, D51_CTRLB, D51_PARAM, D51_INTFLAG, D51_STATUS, D51_ADDR, D51_RUNLOCK = (
    0x00,
    0x04,
    0x08,
    0x10,
    0x12,
    0x14,
    0x18,
)
D51_DONE, D51_ADDRE, D51_PROGE, D51_LOCKE, D51_NVME = 0x01, 0x02, 0x04, 0x08, 0x40
D51_COMMANDS = {
    0x00: "EP",
    0x01: "EB",
    0x03: "WP",
    0x04: "WQW",
    0x10: "SWRST",
    0x11: "LR",
    0x12: "UR",
    0x13: "SPRM",
    0x14: "CPRM",
    0x15: "PBC",
    0x16: "SSB",
    0x17: "BKSWRST",
    0x18: "CELCK",
    0x19: "CEULCK",
    0x1A: "SBPDIS",
    0x1B: "CBPDIS",
}
#: CTRLA.WMODE -> bytes after which an automatic write happens (0 = manual).
D51_WMODE_UNIT = {0: 0, 1: 8, 2: 16, 3: 512}


class NvmD51(Nvm):
    page = 512
    erase_unit = 8192
    lock_region = 0

    def __init__(self, ctx: Context, flash: bytearray, user: bytearray) -> None:
        self.lock_region = len(flash) // 32
        super().__init__(ctx, flash, user, D51_TIMING)
        regs = self.registers
        # CTRLA reset 0x0004 (AUTOWS, WMODE = MAN); PARAM: NVMP pages, PSZ 6 = 512 B,
        # SEE (SmartEEPROM) bit 31. Reset values as in the part header (UNCONFIRMED).
        regs.set(D51_CTRLA, 0x0004, 2)
        regs.set(D51_PARAM, (1 << 31) | (6 << 16) | (len(flash) // self.page))
        self.intflag = 0
        self.ctrlb = 0
        self.reset_request = False

    def bootprot_size(self) -> int:
        value = int.from_bytes(self.user[0:4], "little") >> 26 & 0xF
        return (15 - value) * 8192

    def user_locks(self) -> int:
        # NVM region lock bits from byte 8 of the user page, 1 = unlocked.
        return ~int.from_bytes(self.user[8:12], "little") & 0xFFFFFFFF

    def flag_lock_error(self) -> None:
        self.intflag |= D51_LOCKE

    def _read(self, offset: int, size: int) -> int | None:
        regs = self.registers
        regs.set(D51_INTFLAG, self.intflag, 2)
        bootprot = 15 - self.protected // 8192
        status = (1 if self.ready else 0) | (4 if self.loaded else 0)
        status |= (0x20 if self.boot_protection_off else 0) | (bootprot << 8)
        regs.set(D51_STATUS, status, 2)
        regs.set(D51_ADDR, self.address)
        regs.set(D51_RUNLOCK, ~self.locks & 0xFFFFFFFF)
        regs.set(D51_CTRLB, 0, 2)  # write-only: reads as zero
        return None

    def _write(self, offset: int, size: int, value: int) -> None:
        regs = self.registers
        if covers(offset, size, D51_CTRLA, 2):
            regs.set(D51_CTRLA, merge(regs.get(D51_CTRLA, 2), offset, size, value, D51_CTRLA, 2), 2)
        if covers(offset, size, D51_INTFLAG, 2):
            self.intflag &= ~merge(0, offset, size, value, D51_INTFLAG, 2)
        if covers(offset, size, D51_ADDR, 4):
            self.address = merge(self.address, offset, size, value, D51_ADDR, 4) & 0xFFFFFF
        if covers(offset, size, D51_CTRLB, 2):
            self.ctrlb = merge(self.ctrlb, offset, size, value, D51_CTRLB, 2)
            # bossac writes CTRLB a byte at a time, command first, then the key
            # (shumatech/BOSSA src/D5xNvmFlash.cpp writeRegU16): the command runs
            # when the key byte arrives.
            if covers(offset, size, D51_CTRLB + 1, 1):
                self.command(self.ctrlb)

    def after_buffer_write(self, address: int, size: int) -> None:
        unit = D51_WMODE_UNIT[self.registers.get(D51_CTRLA, 2) >> 4 & 3]
        if unit and (address % unit) + size == unit:
            self.program("auto", address, unit, self.timing.quad_write)

    def command(self, value: int) -> None:
        cmd = value & 0x7F
        name = D51_COMMANDS.get(cmd, f"0x{cmd:02X}")
        if value >> 8 != KEY or name.startswith("0x"):
            self.intflag |= D51_PROGE
            self.commands.append((name, self.address, "bad key or command"))
            return
        address = self.address
        if name == "EB":
            if address >= USER_ROW:
                self.intflag |= D51_ADDRE
                self.commands.append((name, address, "not in the main array"))
            elif self.erase(name, address, self.erase_unit):
                self.intflag |= D51_DONE
        elif name == "EP":
            # Page erase exists for the user page only (samba.md §8.4).
            if address < USER_ROW:
                self.intflag |= D51_ADDRE
                self.commands.append((name, address, "not in the user page"))
            elif self.erase(name, address, self.page):
                self.intflag |= D51_DONE
        elif name in ("WP", "WQW"):
            length = self.page if name == "WP" else 16
            busy = self.timing.page_write if name == "WP" else self.timing.quad_write
            if self.program(name, address, length, busy):
                self.intflag |= D51_DONE
        elif name == "PBC":
            self.buffer[:] = bytes([ERASED]) * self.page
            self.loaded = False
            self.done(name, address, 0)
            self.intflag |= D51_DONE
        elif name in ("LR", "UR"):
            bit = 1 << (address // self.lock_region)
            self.locks = self.locks | bit if name == "LR" else self.locks & ~bit
            self.done(name, address, 0)
        elif name in ("SBPDIS", "CBPDIS"):
            self.boot_protection_off = name == "SBPDIS"
            self.done(name, address, 0)
        elif name == "SSB":
            self.security = True
            self.done(name, address, 0)
        elif name == "SWRST":
            self.reset_request = True
            self.done(name, address, 0)
        else:
            self.done(name, address, 0)
            self.intflag |= D51_DONE
