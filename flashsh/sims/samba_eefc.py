"""The Enhanced Embedded Flash Controller of SAM3X and SAM4E, one object per plane.

Registers per plane (samba.md §8.2): FMR 0x00, FCR 0x04 (FKEY 0x5A in bits 31:24, FARG
23:8, FCMD 7:0), FSR 0x08 (FRDY 0, FCMDE 1, FLOCKE 2; error bits clear when read), FRR
0x0C (result words, one per read). The latch buffer is mapped over the plane's whole
address range and wraps per page; only 32-bit stores reach it (SAM4E datasheet §21.4.3.2:
"Byte and half-word AHB accesses to the latch buffer are not allowed"), and it is set to
all ones after every programming command. Programming only clears bits: WP over
programmed cells ANDs the data in; EWP erases the page first.

Differences kept: SAM3X has no EPA (FCMDE), and its EWP works on every page; SAM4E's EWP
only in the two 8 KiB small sectors of the first 16 KiB (shumatech/BOSSA issues #42 and
#130), anywhere else FCMDE (which bit the chip sets there is UNCONFIRMED; bossac only needs
an error). A command on a locked region sets FLOCKE and does nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flashsh.sims.samba_bus import BusFault, Context, Registers

FMR, FCR, FSR, FRR = 0x00, 0x04, 0x08, 0x0C
FKEY = 0x5A
FRDY, FCMDE, FLOCKE = 0x1, 0x2, 0x4
GETD, WP, WPL, EWP, EWPL, EA, EPA = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x07
SLB, CLB, GLB, SGPB, CGPB, GGPB = 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D
ERASED = 0xFF


@dataclass(frozen=True)
class EefcTiming:
    """Busy times in seconds. Defaults from the SAM4E datasheet's AC flash
    characteristics (write page 1.5 ms typical, erase page 10 ms, erase 4 KiB block
    50 ms, full erase of 512 KiB 5.5 s typical) as quoted from memory of that table:
    UNCONFIRMED here, and the SAM3X table is taken to be alike."""

    page_write: float = 0.0015
    page_erase: float = 0.010
    erase_4k: float = 0.050
    plane_erase: float = 5.5
    bits: float = 0.0001  # lock and GPNVM bits


class Gpnvm:
    """The GPNVM bits, kept in EEFC0 (bit 0 security, 1 boot from flash, 2 on SAM3X:
    boot from flash1)."""

    def __init__(self, count: int, value: int = 0) -> None:
        self.count = count
        self.value = value & ((1 << count) - 1)


class EefcPlane:
    """One flash plane and its controller."""

    def __init__(
        self,
        ctx: Context,
        *,
        index: int,
        regs: int,
        flash: bytearray,
        offset: int,
        size: int,
        base: int,
        page: int,
        lock_region: int,
        gpnvm: Gpnvm | None,
        has_epa: bool,
        ewp_limit: int | None,
        timing: EefcTiming,
        on_gpnvm: Callable[[], None] = lambda: None,
    ) -> None:
        self.ctx = ctx
        self.index = index
        self.flash = flash  # the whole chip's flash; this plane owns [offset, offset+size)
        self.offset = offset
        self.size = size
        self.base = base  # bus address of this plane's first byte
        self.page = page
        self.lock_region = lock_region
        self.gpnvm = gpnvm
        self.has_epa = has_epa
        self.ewp_limit = ewp_limit
        self.timing = timing
        self.on_gpnvm = on_gpnvm
        self.registers = Registers(regs, 0x10, on_read=self._read_reg, on_write=self._write_reg)
        self.latch = bytearray([ERASED]) * page
        self.locks = 0  # bit n: lock region n of this plane
        self.errors = 0
        self.busy_until = 0.0
        self.frr: list[int] = []
        self.fmr = 0
        #: (command name, argument, outcome) of every FCR write, for tests.
        self.commands: list[tuple[str, int, str]] = []

    @property
    def pages(self) -> int:
        return self.size // self.page

    # ------------------------------------------------------------------ latch

    def read(self, address: int, size: int) -> int:
        at = self.offset + address - self.base
        return int.from_bytes(self.flash[at : at + size], "little")

    def write(self, address: int, size: int, value: int) -> None:
        """A store into the plane's address range: it fills the latch."""
        if size != 4:
            raise BusFault(f"{8 * size}-bit store into the EEFC latch at 0x{address:08X}")
        at = (address - self.base) % self.page
        self.latch[at : at + 4] = value.to_bytes(4, "little")

    # ------------------------------------------------------------------ registers

    def _read_reg(self, offset: int, size: int) -> int | None:
        if offset == FSR:
            ready = FRDY if self.ctx.now() >= self.busy_until else 0
            value, self.errors = ready | self.errors, 0
            return value
        if offset == FRR:
            return self.frr.pop(0) if self.frr else 0
        if offset == FMR:
            return self.fmr
        return 0

    def _write_reg(self, offset: int, size: int, value: int) -> None:
        if offset == FMR and size == 4:
            self.fmr = value
        elif offset == FCR and size == 4:
            self.command(value)

    # ------------------------------------------------------------------ commands

    def command(self, value: int) -> None:
        cmd, arg = value & 0xFF, (value >> 8) & 0xFFFF
        name = _NAMES.get(cmd, f"0x{cmd:02X}")
        if value >> 24 != FKEY:
            self._outcome(name, arg, "bad key", FCMDE)
            return
        if self.ctx.now() < self.busy_until:
            # The controller is still busy: the datasheet forbids a new command then;
            # what the hardware does with it is UNCONFIRMED. It is dropped here.
            self._outcome(name, arg, "ignored: busy", 0)
            return
        handler = {
            WP: self._write_page,
            WPL: self._write_page,
            EWP: self._write_page,
            EWPL: self._write_page,
            EA: self._erase_all,
            EPA: self._erase_pages,
            SLB: self._lock,
            CLB: self._lock,
            GLB: self._get_locks,
            SGPB: self._gpnvm,
            CGPB: self._gpnvm,
            GGPB: self._gpnvm,
            GETD: self._descriptor,
        }.get(cmd)
        if handler is None or (cmd == EPA and not self.has_epa):
            self._outcome(name, arg, "unknown command", FCMDE)
            return
        handler(cmd, arg)

    def _outcome(self, name: str, arg: int, outcome: str, error: int, busy: float = 0) -> None:
        self.errors |= error
        self.busy_until = self.ctx.later(busy)
        self.commands.append((name, arg, outcome))
        if error or outcome != "ok":
            self.ctx.log(f"EEFC{self.index} {name} {arg}: {outcome}")

    def _region_locked(self, start: int, length: int) -> bool:
        first = start // self.lock_region
        last = (start + length - 1) // self.lock_region
        return any(self.locks >> n & 1 for n in range(first, last + 1))

    def _write_page(self, cmd: int, page: int) -> None:
        name = _NAMES[cmd]
        if page >= self.pages:
            self._outcome(name, page, "page out of range", FCMDE)
            return
        start = page * self.page
        erase = cmd in (EWP, EWPL)
        if erase and self.ewp_limit is not None and start >= self.ewp_limit:
            self._outcome(name, page, "EWP outside the small sectors", FCMDE)
            return
        if self._region_locked(start, self.page):
            self._outcome(name, page, "locked", FLOCKE)
            self.latch[:] = bytes([ERASED]) * self.page
            return
        at = self.offset + start
        if erase:
            self.flash[at : at + self.page] = bytes([ERASED]) * self.page
        old = self.flash[at : at + self.page]
        self.flash[at : at + self.page] = bytes(a & b for a, b in zip(old, self.latch, strict=True))
        self.latch[:] = bytes([ERASED]) * self.page
        if cmd in (WPL, EWPL):
            self.locks |= 1 << (start // self.lock_region)
        busy = self.timing.page_write + (self.timing.page_erase if erase else 0)
        self._outcome(name, page, "ok", 0, busy)

    def _erase_all(self, cmd: int, arg: int) -> None:
        if self.locks:
            self._outcome("EA", arg, "locked", FLOCKE)
            return
        self.flash[self.offset : self.offset + self.size] = bytes([ERASED]) * self.size
        self.ctx.log(f"EEFC{self.index} EA: plane of {self.size} bytes erased")
        self._outcome("EA", arg, "ok", 0, self.timing.plane_erase)

    def _erase_pages(self, cmd: int, arg: int) -> None:
        # FARG: first page in bits 15:2, how many in bits 1:0 (4, 8, 16, 32 pages).
        # Code 0 (4 pages) only in the small sectors (samba.md §8.2: UNCONFIRMED which
        # codes each sector size accepts on SAM4E).
        count = 4 << (arg & 3)
        first = arg & ~3
        start = first * self.page
        if first % count or first + count > self.pages:
            self._outcome("EPA", arg, "misaligned", FCMDE)
            return
        if count == 4 and (self.ewp_limit is None or start >= self.ewp_limit):
            self._outcome("EPA", arg, "4 pages only in the small sectors", FCMDE)
            return
        if self._region_locked(start, count * self.page):
            self._outcome("EPA", arg, "locked", FLOCKE)
            return
        at = self.offset + start
        self.flash[at : at + count * self.page] = bytes([ERASED]) * (count * self.page)
        busy = self.timing.erase_4k * count * self.page / 4096
        self._outcome("EPA", arg, "ok", 0, busy)

    def _lock(self, cmd: int, page: int) -> None:
        if page >= self.pages:
            self._outcome(_NAMES[cmd], page, "page out of range", FCMDE)
            return
        bit = 1 << (page * self.page // self.lock_region)
        self.locks = self.locks | bit if cmd == SLB else self.locks & ~bit
        self._outcome(_NAMES[cmd], page, "ok", 0, self.timing.bits)

    def _get_locks(self, cmd: int, arg: int) -> None:
        regions = self.size // self.lock_region
        self.frr = [(self.locks >> (32 * i)) & 0xFFFFFFFF for i in range((regions + 31) // 32)]
        self._outcome("GLB", arg, "ok", 0)

    def _gpnvm(self, cmd: int, bit: int) -> None:
        name = _NAMES[cmd]
        gpnvm = self.gpnvm
        # GPNVM bits live in EEFC0; the second plane's controller has none
        # (UNCONFIRMED what EEFC1 answers: a command error here).
        if gpnvm is None or (cmd != GGPB and bit >= gpnvm.count):
            self._outcome(name, bit, "no such GPNVM bit", FCMDE)
            return
        if cmd == GGPB:
            self.frr = [gpnvm.value]
        elif cmd == SGPB:
            gpnvm.value |= 1 << bit
        else:
            gpnvm.value &= ~(1 << bit)
        self._outcome(name, bit, "ok", 0, self.timing.bits)
        if cmd != GGPB:
            self.ctx.log(f"GPNVM{bit} {'set' if cmd == SGPB else 'cleared'}")
            self.on_gpnvm()

    def _descriptor(self, cmd: int, arg: int) -> None:
        # FL_ID, FL_SIZE, FL_PAGE_SIZE, FL_NB_PLANE, FL_PLANE[], FL_NB_LOCK, FL_LOCK[]
        # (SAM4E datasheet §21.4.3.1 order). The FL_ID value is UNCONFIRMED.
        regions = self.size // self.lock_region
        self.frr = [0x00000000, self.size, self.page, 1, self.size, regions]
        self.frr += [self.lock_region] * regions
        self._outcome("GETD", arg, "ok", 0)


_NAMES = {
    GETD: "GETD",
    WP: "WP",
    WPL: "WPL",
    EWP: "EWP",
    EWPL: "EWPL",
    EA: "EA",
    EPA: "EPA",
    SLB: "SLB",
    CLB: "CLB",
    GLB: "GLB",
    SGPB: "SGPB",
    CGPB: "CGPB",
    GGPB: "GGPB",
}
