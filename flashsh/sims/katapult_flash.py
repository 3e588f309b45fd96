"""The flash of a simulated Katapult node and its STM32 write rules.

Katapult writes 64-byte blocks itself (katapult src/stm32/flash.c ``flash_write_block``):

* a block address must be block-aligned;
* a block that starts a flash page erases the page unless it is blank; if the page holds
  exactly this block followed by blank flash, the request is a retransmission and is
  skipped (and not counted as a page);
* any other block must land on blank flash, or hold the same data already (a
  retransmission); otherwise the write is out of order and fails;
* the block is read back after writing.

Page sizes follow ``flash_get_page_size``; erase and program times are the typical
figures of each part's datasheet, per page or sector and per programming unit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

ERASED = 0xFF
BLOCK_SIZE = 64  # every Katapult Kconfig (katapult src/stm32/Kconfig BLOCK_SIZE)
FLASH_BASE = 0x08000000


def _f1_pages(flash_size: int) -> Callable[[int], int]:
    # The F103 reads its flash-size register: 1 KiB pages under 256 KiB, else 2 KiB.
    size = 1024 if flash_size < 256 * 1024 else 2048
    return lambda _address: size


def _g0_pages(_flash_size: int) -> Callable[[int], int]:
    return lambda _address: 2048


def _f4_sectors(_flash_size: int) -> Callable[[int], int]:
    # F2/F4: 16 KiB sectors below 0x08010000, one of 64 KiB, then 128 KiB.
    def size(address: int) -> int:
        if address < 0x08010000:
            return 16 * 1024
        if address < 0x08020000:
            return 64 * 1024
        return 128 * 1024

    return size


@dataclass(frozen=True)
class KatapultMcu:
    """One ``CONFIG_MCU`` as Katapult builds it."""

    name: str
    #: Flash the board's chip has; Kconfig FLASH_SIZE default unless said otherwise.
    flash_size: int
    #: First LAUNCH_APP_ADDRESS menuconfig offers for the family (src/stm32/Kconfig).
    app_start: int
    pages: Callable[[int], Callable[[int], int]]
    #: Bytes the flash programs at once and the typical time for that, in us.
    program_unit: int
    program_us: float
    #: Typical erase time, ms, per page size in bytes.
    erase_ms: dict[int, float] = field(default_factory=dict)

    def block_program_s(self) -> float:
        """Seconds to program one 64-byte block."""
        return BLOCK_SIZE // self.program_unit * self.program_us / 1e6


MCUS: dict[str, KatapultMcu] = {
    # Blue Pill (STM32F103C8): Kconfig's 64 KiB, so 1 KiB pages. STM32F103x8/B datasheet
    # tPROG 52.5 us typical per half-word, tERASE 20 ms typical per page.
    "stm32f103xe": KatapultMcu(
        "stm32f103xe", 64 * 1024, 0x08002000, _f1_pages, 2, 52.5, {1024: 20.0, 2048: 20.0}
    ),
    # STM32G0B1 (SKR Mini E3 v3 and most G0 printer boards carry the 512 KiB RE/VE; the
    # Kconfig default is 128 KiB). STM32G0B1xB/C/E datasheet tprog 85 us per double
    # word, tERASE 22 ms per page.
    "stm32g0b1xx": KatapultMcu(
        "stm32g0b1xx", 512 * 1024, 0x08002000, _g0_pages, 8, 85.0, {2048: 22.0}
    ),
    # STM32F446 (Kconfig 512 KiB): STM32F446xC/E datasheet, x32 parallelism, tprog 16 us
    # per word, sector erase 250 / 550 / 1000 ms for 16 / 64 / 128 KiB.
    "stm32f446xx": KatapultMcu(
        "stm32f446xx",
        512 * 1024,
        0x08008000,
        _f4_sectors,
        4,
        16.0,
        {16384: 250.0, 65536: 550.0, 131072: 1000.0},
    ),
}


def mcu_by_name(name: str) -> KatapultMcu:
    """Raises ValueError listing the known MCUs."""
    try:
        return MCUS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown mcu {name!r}; valid: {', '.join(MCUS)}") from None


@dataclass
class WriteResult:
    """What one SEND_BLOCK did to the flash."""

    ok: bool
    seconds: float = 0.0
    why: str = ""


class KatapultFlash:
    """Flash from 0x08000000; the bootloader's own code fills what lies below app start."""

    def __init__(self, mcu: KatapultMcu, app_start: int, flash_size: int | None = None) -> None:
        self.mcu = mcu
        self.app_start = app_start
        self.size = flash_size or mcu.flash_size
        self.data = bytearray([ERASED]) * self.size
        self.page_size = mcu.pages(self.size)
        # Something that is not blank where Katapult itself lives, so reads below the
        # application start show it.
        boot = min(app_start - FLASH_BASE, self.size)
        filler = b"Katapult" * (boot // 8 + 1)
        self.data[:boot] = filler[:boot]
        #: Pages whose first block was written since boot (what SEND_EOF reports).
        self.page_writes = 0
        self.erases: list[int] = []

    def reboot(self) -> None:
        """A reset clears the firmware's page counter (a static variable)."""
        self.page_writes = 0

    # ------------------------------------------------------------------ access

    def read(self, address: int, length: int = BLOCK_SIZE) -> bytes:
        """Bytes at ``address``; outside flash reads as 0xFF (what a real chip returns
        there is UNCONFIRMED, katapult.md 2.7)."""
        out = bytearray([ERASED]) * length
        for i in range(length):
            offset = address - FLASH_BASE + i
            if 0 <= offset < self.size:
                out[i] = self.data[offset]
        return bytes(out)

    def load(self, address: int, data: bytes) -> None:
        """Place ``data`` as if programmed earlier."""
        offset = address - FLASH_BASE
        if offset < 0 or offset + len(data) > self.size:
            raise ValueError(f"image at 0x{address:08X} does not fit the flash")
        self.data[offset : offset + len(data)] = data

    def _blank(self, address: int, length: int) -> bool:
        return self.read(address, length) == bytes([ERASED]) * length

    def app_valid(self) -> bool:
        """The first application word is neither 0 nor 0xFFFFFFFF (katapult
        src/generic/armcm_canboot.c ``application_check_valid``)."""
        word = int.from_bytes(self.read(self.app_start, 4), "little")
        return word not in (0, 0xFFFFFFFF)

    # ------------------------------------------------------------------ writing

    def write_block(self, address: int, block: bytes) -> WriteResult:
        """One block as ``flash_write_block`` handles it."""
        if address % BLOCK_SIZE:
            return WriteResult(False, why="not block-aligned")
        page = self.page_size(address)
        page_address = address - (address - FLASH_BASE) % page
        if not 0 <= address - FLASH_BASE <= self.size - BLOCK_SIZE:
            # No upper-bound check on STM32: the write goes nowhere and the read-back
            # fails (the real effect is UNCONFIRMED, katapult.md 2.11).
            return WriteResult(False, why="outside flash")
        seconds = 0.0
        if page_address == address:
            if self._blank(address, page):
                pass
            elif self.read(address) == block and self._blank(
                address + BLOCK_SIZE, page - BLOCK_SIZE
            ):
                return WriteResult(True, why="retransmission")
            else:
                self._erase(page_address, page)
                seconds += self.mcu.erase_ms.get(page, 0.0) / 1000
            self.page_writes += 1
        elif not self._blank(address, BLOCK_SIZE):
            if self.read(address) == block:
                return WriteResult(True, why="retransmission")
            return WriteResult(False, why="out of order (flash not blank)")
        offset = address - FLASH_BASE
        # NOR flash only clears bits; the read-back below catches anything else.
        old = self.data[offset : offset + BLOCK_SIZE]
        anded = bytes(a & b for a, b in zip(old, block, strict=True))
        self.data[offset : offset + BLOCK_SIZE] = anded
        seconds += self.mcu.block_program_s()
        if self.read(address) != block:
            return WriteResult(False, seconds, "read-back mismatch")
        return WriteResult(True, seconds)

    def _erase(self, page_address: int, page: int) -> None:
        offset = page_address - FLASH_BASE
        self.data[offset : offset + page] = bytes([ERASED]) * page
        self.erases.append(page_address)
