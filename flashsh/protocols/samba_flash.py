"""Flash controllers behind the SAM-BA monitor, driven with ``w``/``W``, ``S`` and ``G``.

EEFC (SAM3X, SAM4E, SAM4S; samba.md §8.2): write the page into the latch with the copy
routine, then ``FCR = 0x5A << 24 | page << 8 | command``. SAM3X has two planes, each
counting its own pages, and no EPA, so it writes with EWP (erase and write). SAM4 runs
EWP only in the first 16 KiB: flashsh erases with EPA (8 pages) or EA and writes with WP.

NVMCTRL on SAMD21 (§8.3): commands in CTRLA, ADDR counts half-words, rows of 4 pages.
NVMCTRL on SAMD51 (§8.4): commands in CTRLB, ADDR counts bytes, 8 KiB blocks, STATUS
and INTFLAG read byte-wise as bossac does. Both write a page through the copy routine
(page buffer clear, copy, WP) unless the monitor has the Arduino ``Y`` command.

Every wait is bounded and names the register it waited for.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable

from flashsh.chips.sam import SamChip
from flashsh.errors import NoAnswerError, TargetError
from flashsh.numbers import hexaddr
from flashsh.protocols import samba_applet as applet
from flashsh.protocols.samba_wire import SambaWire

# EEFC registers and commands (samba.md §8.2).
EEFC_FMR, EEFC_FCR, EEFC_FSR, EEFC_FRR = 0x00, 0x04, 0x08, 0x0C
FSR_FRDY, FSR_FCMDE, FSR_FLOCKE = 0x1, 0x2, 0x4
FKEY = 0x5A
WP, EWP, EA, EPA, SGPB, CGPB, GGPB = 0x01, 0x03, 0x05, 0x07, 0x0B, 0x0C, 0x0D
#: FWS = 6 wait states: bossac writes this to every plane first (SAM3 errata).
FMR_VALUE = 0x00000600
#: EPA argument: first page | 1 erases 8 pages (bossac's choice, §8.2).
EPA_PAGES, EPA_CODE = 8, 1
#: A page program takes milliseconds; EA seconds (SAM4S measured 7.3 s, bossac 30 s).
EEFC_TIMEOUT = 1.0
EA_TIMEOUT = 30.0
#: RSTC_CR key 0xA5 with PROCRST | PERRST | EXTRST.
RSTC_RESET = 0xA500000D

# NVMCTRL (samba.md §8.3, §8.4).
NVMCTRL = 0x41004000
NVM_KEY = 0xA500
D21_CTRLA, D21_CTRLB, D21_INTFLAG, D21_STATUS, D21_ADDR = 0x00, 0x04, 0x14, 0x18, 0x1C
D21_ER, D21_WP, D21_PBC = 0x02, 0x04, 0x44
D21_READY, D21_ERROR = 0x1, 0x2
D21_MANW, D21_CACHEDIS = 1 << 7, 1 << 18
D21_STATUS_ERRORS = 0x1E  # PROGE, LOCKE, NVME and LOAD, write 1 to clear
D21_SB = 1 << 8
D51_CTRLA, D51_CTRLB, D51_INTFLAG, D51_STATUS, D51_ADDR = 0x00, 0x04, 0x10, 0x12, 0x14
D51_EB, D51_WP, D51_PBC = 0x01, 0x03, 0x15
D51_READY = 0x1
D51_ERRORS = 0xCE  # ADDRE, PROGE, LOCKE, NVME (bossac's mask)
#: DSU STATUSB.PROT: the SAMD51 security bit.
DSU_STATUSB = 0x41002002
USER_ROW = 0x00804000
NVM_TIMEOUT = 1.0
#: Cortex-M AIRCR with VECTKEY and SYSRESETREQ (samba.md §10, -R).
AIRCR, AIRCR_RESET = 0xE000ED0C, 0x05FA0004


def wait_for(
    read: Callable[[], int], done: Callable[[int], bool], timeout: float, what: str
) -> int:
    """Poll ``read`` until ``done``; raise naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise NoAnswerError(
                f"{what} not ready after {timeout:g} s (last read 0x{value:08x})",
                "the chip may have reset; reconnect",
            )
        time.sleep(0.001)


class Controller(ABC):
    """What the protocol needs from a flash controller."""

    def __init__(self, wire: SambaWire, chip: SamChip) -> None:
        self.wire = wire
        self.chip = chip
        self.applet_loaded = False

    def load_applet(self) -> None:
        """Upload the copy routine once per connection."""
        if not self.applet_loaded:
            self.wire.write_memory(
                self.chip.applet, applet.image(self.chip.applet, self.chip.stack)
            )
            self.applet_loaded = True

    def settle(self) -> None:
        """Wait for a write still running in the controller (see Eefc.write_page)."""
        return None

    def copy(self, dst: int, data: bytes) -> None:
        """Run the copy routine: ``data`` lands at ``dst`` by 32-bit stores."""
        self.load_applet()
        base = self.chip.applet
        self.wire.write_memory(base + applet.PARAMS, applet.frame(base, dst, data))
        self.wire.go(base + applet.VECTOR)

    def prepare(self) -> None:
        return None

    @abstractmethod
    def write_page(self, address: int, data: bytes) -> None:
        """Write one page at a page-aligned address."""

    @abstractmethod
    def erase(self, start: int, end: int) -> None:
        """Erase the units covering [start, end)."""

    @abstractmethod
    def erase_all(self, start: int) -> None:
        """Erase everything from ``start`` to the end of flash."""

    def reset(self) -> None:
        self.wire.write_word(AIRCR, AIRCR_RESET)

    @abstractmethod
    def security(self) -> bool:
        """Whether the security bit is set."""


class Eefc(Controller):
    def __init__(self, wire: SambaWire, chip: SamChip) -> None:
        super().__init__(wire, chip)
        #: A page write left running: (plane, command, argument, timeout).
        self._running: tuple[int, int, int, float] | None = None

    def prepare(self) -> None:
        for base in self.chip.eefc:
            self.wire.write_word(base + EEFC_FMR, FMR_VALUE)

    def command(self, plane: int, cmd: int, arg: int = 0, timeout: float = EEFC_TIMEOUT) -> None:
        """Issue ``cmd`` on ``plane`` and wait for FRDY; raise on FCMDE/FLOCKE."""
        self.settle()
        self._start(plane, cmd, arg, timeout)
        self.settle()

    def _start(self, plane: int, cmd: int, arg: int, timeout: float) -> None:
        base = self.chip.eefc[plane]
        self.wire.write_word(base + EEFC_FCR, FKEY << 24 | arg << 8 | cmd)
        self._running = (plane, cmd, arg, timeout)

    def settle(self) -> None:
        """Wait for FRDY after the last command; raise on FCMDE/FLOCKE. FSR's error bits
        clear when read, so the first read that shows FRDY tells."""
        if self._running is None:
            return
        plane, cmd, arg, timeout = self._running
        self._running = None
        base = self.chip.eefc[plane]
        fsr = wait_for(
            lambda: self.wire.read_word(base + EEFC_FSR),
            lambda v: bool(v & FSR_FRDY),
            timeout,
            f"EEFC{plane} (FSR {hexaddr(base + EEFC_FSR)})",
        )
        if fsr & FSR_FLOCKE:
            raise TargetError(
                f"the flash is locked there (EEFC{plane} FSR 0x{fsr:x}, command 0x{cmd:02x})",
                "clear the lock bits (bossac -u) or erase with the ERASE pin",
            )
        if fsr & FSR_FCMDE:
            raise TargetError(f"EEFC{plane} refused command 0x{cmd:02x} argument {arg}")

    def write_page(self, address: int, data: bytes) -> None:
        """The page goes into SRAM while the previous page is still being written (the
        monitor runs from ROM and the latch is apart from SRAM, as bossac overlaps
        them); then, once FRDY says the latch is free, into the latch, and the write is
        started and left running. ``settle`` collects its result."""
        plane, page = self.chip.plane_of(address)
        self.load_applet()
        base = self.chip.applet
        self.wire.write_memory(base + applet.PARAMS, applet.frame(base, address, data))
        self.settle()
        self.wire.go(base + applet.VECTOR)
        # SAM3X has no EPA: EWP erases and writes in one. SAM4 was erased before.
        self._start(plane, WP if self.chip.ewp_limit else EWP, page, EEFC_TIMEOUT)

    def erase(self, start: int, end: int) -> None:
        """EPA of 8 pages at a time (SAM4); SAM3X has no page erase (EWP on write)."""
        if not self.chip.ewp_limit:
            raise TargetError("SAM3X has no page erase; each page is erased as it is written")
        step = EPA_PAGES * self.chip.page_size
        for address in range(start, end, step):
            plane, page = self.chip.plane_of(address)
            self.command(plane, EPA, page | EPA_CODE)

    def erase_all(self, start: int) -> None:
        for plane in range(self.chip.planes):
            self.command(plane, EA, 0, EA_TIMEOUT)

    def gpnvm(self) -> int:
        """GGPB: the GPNVM bits as one word."""
        self.command(0, GGPB)
        return self.wire.read_word(self.chip.eefc[0] + EEFC_FRR)

    def set_gpnvm(self, bit: int, value: bool) -> None:
        self.command(0, SGPB if value else CGPB, bit)

    def security(self) -> bool:
        return bool(self.gpnvm() & 1)

    def reset(self) -> None:
        self.settle()
        self.wire.write_word(self.chip.rstc_cr, RSTC_RESET)


class NvmD21(Controller):
    def _intflag(self) -> int:
        return self.wire.read_word(NVMCTRL + D21_INTFLAG)

    def command(self, cmd: int, address: int | None = None) -> None:
        wait_for(self._intflag, lambda v: bool(v & D21_READY), NVM_TIMEOUT, "NVMCTRL")
        status = self.wire.read_word(NVMCTRL + D21_STATUS)
        if status & D21_STATUS_ERRORS:
            self.wire.write_word(NVMCTRL + D21_STATUS, status | D21_STATUS_ERRORS)
        if address is not None:
            self.wire.write_word(NVMCTRL + D21_ADDR, address // 2)  # half-words
        self.wire.write_word(NVMCTRL + D21_CTRLA, NVM_KEY | cmd)
        flags = wait_for(self._intflag, lambda v: bool(v & D21_READY), NVM_TIMEOUT, "NVMCTRL")
        if flags & D21_ERROR:
            self.wire.write_word(NVMCTRL + D21_INTFLAG, D21_ERROR)
            where = f" at {hexaddr(address)}" if address is not None else ""
            raise TargetError(
                f"NVMCTRL refused command 0x{cmd:02x}{where} (the bootloader's BOOTPROT "
                "or a region lock protects it)"
            )

    def write_page(self, address: int, data: bytes) -> None:
        ctrlb = self.wire.read_word(NVMCTRL + D21_CTRLB)
        # Manual page write, cache off while flash changes (as bossac does).
        self.wire.write_word(NVMCTRL + D21_CTRLB, ctrlb | D21_MANW | D21_CACHEDIS)
        self.command(D21_PBC)
        self.copy(address, data)
        self.command(D21_WP, address)

    def erase(self, start: int, end: int) -> None:
        for row in range(start, end, self.chip.erase_size):
            self.command(D21_ER, row)

    def erase_all(self, start: int) -> None:
        self.erase(start, self.chip.flash_end)

    def security(self) -> bool:
        return bool(self.wire.read_word(NVMCTRL + D21_STATUS) & D21_SB)

    def bootprot_size(self, user_word: int) -> int:
        """BOOTPROT, bits 2:0 of the user row: 7 = none, 6 = 512 B … 0 = 32 KiB."""
        value = user_word & 7
        return 0 if value == 7 else 512 << (6 - value)


class NvmD51(Controller):
    def _ready(self) -> int:
        return self.wire.read_byte(NVMCTRL + D51_STATUS)

    def command(self, cmd: int, address: int | None = None) -> None:
        wait_for(self._ready, lambda v: bool(v & D51_READY), NVM_TIMEOUT, "NVMCTRL STATUS")
        if address is not None:
            self.wire.write_word(NVMCTRL + D51_ADDR, address)  # bytes
        self.wire.write_word(NVMCTRL + D51_CTRLB, NVM_KEY | cmd)
        wait_for(self._ready, lambda v: bool(v & D51_READY), NVM_TIMEOUT, "NVMCTRL STATUS")
        flags = self.wire.read_byte(NVMCTRL + D51_INTFLAG)
        if flags & D51_ERRORS:
            self.wire.write_byte(NVMCTRL + D51_INTFLAG, D51_ERRORS)
            where = f" at {hexaddr(address)}" if address is not None else ""
            raise TargetError(
                f"NVMCTRL refused command 0x{cmd:02x}{where} (INTFLAG 0x{flags:02x}: "
                "BOOTPROT or a region lock protects it)"
            )

    def write_page(self, address: int, data: bytes) -> None:
        # WMODE = manual (bits 5:4 = 0), both caches off (bits 15:14), as bossac does.
        low = self.wire.read_byte(NVMCTRL + D51_CTRLA)
        high = self.wire.read_byte(NVMCTRL + D51_CTRLA + 1)
        self.wire.write_byte(NVMCTRL + D51_CTRLA, low & 0xCF)
        self.wire.write_byte(NVMCTRL + D51_CTRLA + 1, high | 0xC0)
        self.command(D51_PBC)
        self.copy(address, data)
        self.command(D51_WP, address)

    def erase(self, start: int, end: int) -> None:
        for block in range(start, end, self.chip.erase_size):
            self.command(D51_EB, block)

    def erase_all(self, start: int) -> None:
        self.erase(start, self.chip.flash_end)

    def security(self) -> bool:
        return bool(self.wire.read_byte(DSU_STATUSB) & 1)

    def bootprot_size(self, user_word: int) -> int:
        """BOOTPROT, bits 29:26 of the user page's first word: (15 - value) × 8 KiB."""
        return (15 - ((user_word >> 26) & 0xF)) * 8192


def controller_for(wire: SambaWire, chip: SamChip) -> Controller:
    kinds: dict[str, type[Controller]] = {"eefc": Eefc, "nvm-d21": NvmD21, "nvm-d51": NvmD51}
    return kinds[chip.controller](wire, chip)
