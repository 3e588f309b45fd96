"""Flash and EEPROM of a simulated AVR, programmed the way SPM and the EEPROM unit work.

Flash is written through a one-page temporary buffer: fill words, then erase the page
and write it. The rules that matter to a bootloader, from the ATmega datasheets ("Boot
Loader Support - Read-While-Write Self-Programming"):

* a word of the temporary buffer can be filled only once until the next page write
  (later fills of the same word are ignored), and a page write empties the buffer;
* programming only clears bits: writing a page that was not erased ANDs the data in;
* with the boot lock bits Arduino sets (lock 0x0F: SPM may not write the boot section)
  erasing or writing a page in the boot section does nothing.

The boot section holds a recognisable pattern standing in for the bootloader's code, so a
test can tell that it survived.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from flashsh.chips import AvrPart

ERASED = 0xFF

# Datasheet "Typical Programming Time" tables (ATmega328P, ATmega1284P, ATmega2560):
# SPM page erase and page write take 3.7-4.5 ms each; an EEPROM byte write from the CPU
# takes 26368 cycles of the calibrated 8 MHz RC oscillator, 3.3 ms.
PAGE_ERASE_MS = 4.1
PAGE_WRITE_MS = 4.1
EEPROM_WRITE_MS = 3.3


@dataclass
class MemoryStats:
    """What the firmware did to the memories, for tests."""

    page_erases: int = 0
    page_writes: int = 0
    eeprom_writes: int = 0
    #: Page addresses whose erase or write the boot lock bits refused.
    boot_writes_refused: list[int] = field(default_factory=list)


class ChipMemory:
    """Flash (with its SPM page buffer) and EEPROM of one AVR part."""

    def __init__(
        self,
        part: AvrPart,
        boot_size: int,
        *,
        boot_label: bytes = b"BOOT",
        boot_locked: bool = True,
    ) -> None:
        if boot_size % part.flash_page or not 0 < boot_size < part.flash_size:
            raise ValueError(f"boot section of {boot_size} bytes does not fit {part.name}")
        self.part = part
        self.page_size = part.flash_page
        self.flash = bytearray([ERASED]) * part.flash_size
        self.eeprom = bytearray([ERASED]) * part.eeprom_size
        self.boot_start = part.flash_size - boot_size
        self.boot_locked = boot_locked
        self.stats = MemoryStats()
        self._buffer = bytearray([ERASED]) * self.page_size
        self._filled = bytearray(self.page_size // 2)  # 1 = word already filled
        self.fill_boot(boot_label)

    # ------------------------------------------------------------------ setup

    def fill_boot(self, label: bytes) -> None:
        """Fill the boot section with ``label`` repeated: the bootloader's "code"."""
        size = self.part.flash_size - self.boot_start
        pattern = (label * (size // len(label) + 1))[:size]
        self.flash[self.boot_start :] = pattern

    @property
    def boot_image(self) -> bytes:
        return bytes(self.flash[self.boot_start :])

    def load(self, segments: Iterable[tuple[int, bytes]], *, memory: str = "flash") -> None:
        """Put an initial image in place, as if programmed earlier. Raises ValueError when
        it does not fit or (flash) reaches into the boot section."""
        target = self.flash if memory == "flash" else self.eeprom
        limit = self.boot_start if memory == "flash" else len(self.eeprom)
        for address, data in segments:
            if address < 0 or address + len(data) > limit:
                what = "the bootloader" if memory == "flash" else "the EEPROM's end"
                raise ValueError(
                    f"image data at 0x{address:x}+{len(data)} runs into {what} (0x{limit:x})"
                )
            target[address : address + len(data)] = data

    # ------------------------------------------------------------------ flash (SPM)

    def wrap(self, address: int) -> int:
        """Flash address the hardware uses for ``address``: high bits beyond the part's
        flash are not decoded."""
        return address % len(self.flash)

    def page_of(self, address: int) -> int:
        return self.wrap(address) - self.wrap(address) % self.page_size

    def spm_fill(self, address: int, low: int, high: int) -> None:
        """Load one word into the temporary page buffer at ``address``'s offset in a page."""
        offset = self.wrap(address) % self.page_size & ~1
        if self._filled[offset // 2]:
            return
        self._filled[offset // 2] = 1
        self._buffer[offset] = low
        self._buffer[offset + 1] = high

    def spm_erase(self, address: int) -> bool:
        """Erase the page holding ``address``; False if the boot lock refused."""
        page = self.page_of(address)
        if self._refused(page):
            return False
        self.flash[page : page + self.page_size] = bytes([ERASED]) * self.page_size
        self.stats.page_erases += 1
        return True

    def spm_write(self, address: int) -> bool:
        """Program the temporary buffer into the page holding ``address`` and empty the
        buffer; False if the boot lock refused."""
        page = self.page_of(address)
        buffer = bytes(self._buffer)
        self._buffer[:] = bytes([ERASED]) * self.page_size
        self._filled[:] = bytes(len(self._filled))
        if self._refused(page):
            return False
        old = self.flash[page : page + self.page_size]
        # Programming moves cells from 1 to 0 only.
        programmed = bytes(a & b for a, b in zip(old, buffer, strict=True))
        self.flash[page : page + self.page_size] = programmed
        self.stats.page_writes += 1
        return True

    def _refused(self, page: int) -> bool:
        if self.boot_locked and page >= self.boot_start:
            self.stats.boot_writes_refused.append(page)
            return True
        return False

    def read_flash(self, address: int) -> int:
        return self.flash[self.wrap(address)]

    # ------------------------------------------------------------------ EEPROM

    def eeprom_address(self, address: int) -> int:
        """EEAR has just enough bits for the EEPROM: higher bits are ignored."""
        return address % len(self.eeprom)

    def eeprom_write(self, address: int, value: int) -> None:
        """Erase-and-write one byte (the EEPROM unit's default atomic mode)."""
        self.eeprom[self.eeprom_address(address)] = value
        self.stats.eeprom_writes += 1

    def eeprom_read(self, address: int) -> int:
        return self.eeprom[self.eeprom_address(address)]
