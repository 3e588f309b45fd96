"""The memories of a simulated STM32 as its ROM bootloader reaches them.

Flash, RAM, option bytes, system memory (with the bootloader ID, flash-size register and
unique ID inside or beside it) laid out as ``flashsh.chips.stm32`` describes. The rules
that matter to a host, from AN3155 and the fact sheets:

* programming only goes into erased flash: a write over programmed bytes is refused
  (``overwrite="nack"``) unless the data equals what is there, as a verify-retry sends;
  ``overwrite="and"`` ANDs the bits in instead, as NOR flash would without the
  controller's check;
* write-protected pages take writes and erases without complaint and keep their data;
* the option bytes carry value/complement pairs; a pair that does not match loads as
  0xFF, so erased option bytes mean read-out protection on F0/F1/F4/G0;
* removing read-out protection erases all flash and puts the option bytes back to the
  family's defaults, protection removed with them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from flashsh.chips.stm32 import EraseUnit, Stm32Chip

ERASED = 0xFF
# Any RDP value but level 0's and level 2's means level 1; the model writes 0x00.
RDP_LEVEL1 = 0x00
# The G0 WRP area registers: start page in bits 7:0, end page in bits 23:16 (RM0444).
G0_WRP_FIELD = 0xFF


@dataclass
class MemoryStats:
    """What the ROM did to the memories, for tests."""

    #: Erase indices of the pages or sectors erased, in order.
    erased: list[int] = field(default_factory=list)
    mass_erases: int = 0
    flash_writes: int = 0
    #: Writes refused because the flash there was not erased.
    refused_writes: int = 0
    #: Page or sector indices whose write or erase write protection ignored.
    protected: list[int] = field(default_factory=list)
    option_writes: int = 0


class Stm32Memory:
    """Every memory the ROM bootloader can read, write, erase or jump into."""

    def __init__(
        self, chip: Stm32Chip, *, overwrite: str = "nack", flash_kib: int | None = None
    ) -> None:
        """``flash_kib`` is what the flash-size register says (default: all of it)."""
        if overwrite not in ("nack", "and"):
            raise ValueError(f"unknown overwrite mode {overwrite!r}; valid: nack, and")
        self.chip = chip
        self.overwrite = overwrite
        self.flash = bytearray([ERASED]) * chip.flash_size
        self.ram = bytearray(chip.ram_size)
        self.option = bytearray(chip.option_bytes.default)
        first, last = chip.system_memory
        self.system = bytearray((b"STM32 ROM " * ((last - first) // 10 + 1))[: last - first + 1])
        self.extra = [
            (start, bytearray([ERASED]) * (end - start + 1)) for start, end in chip.readable_extra
        ]
        self.stats = MemoryStats()
        self._fill_device_info(chip.flash_size // 1024 if flash_kib is None else flash_kib)

    # ------------------------------------------------------------------ layout

    def _fill_device_info(self, flash_kib: int) -> None:
        chip = self.chip
        uid = hashlib.sha256(chip.key.encode()).digest()[:12]
        self._poke(chip.flash_size_register, flash_kib.to_bytes(2, "little"))
        self._poke(chip.uid_address, uid)
        if chip.bootloader_id is not None:
            self._poke(chip.bootloader_id_address, bytes([chip.bootloader_id]))

    def _poke(self, address: int, data: bytes) -> None:
        found = self._locate(address, len(data), ("system", "extra"))
        if found is None:
            raise ValueError(f"{self.chip.name}: 0x{address:08X} is in no readable area")
        buffer, index = found
        buffer[index : index + len(data)] = data

    @property
    def free_ram(self) -> tuple[int, int]:
        """[start, end) of the RAM the ROM leaves to the host (empty on F04x)."""
        return self.chip.bootloader_ram[1] + 1, self.chip.ram_end

    def _areas(self, kinds: tuple[str, ...]) -> list[tuple[int, bytearray, int]]:
        """(start address, buffer, buffer index of start) of each area of ``kinds``."""
        chip = self.chip
        areas = []
        if "flash" in kinds:
            areas.append((chip.flash_base, self.flash, 0))
        if "ram" in kinds:
            start, end = self.free_ram
            if end > start:
                areas.append((start, self.ram, start - chip.ram_base))
        if "option" in kinds:
            areas.append((chip.option_bytes.address, self.option, 0))
        if "system" in kinds:
            areas.append((chip.system_memory[0], self.system, 0))
        if "extra" in kinds:
            areas += [(start, buffer, 0) for start, buffer in self.extra]
        return areas

    def _locate(
        self, address: int, length: int, kinds: tuple[str, ...]
    ) -> tuple[bytearray, int] | None:
        """The buffer and index holding [address, address+length) whole, if any area of
        ``kinds`` does."""
        for start, buffer, offset in self._areas(kinds):
            index = address - start + offset
            if address >= start and index + length <= len(buffer):
                return buffer, index
        return None

    def kind_of(self, address: int) -> str | None:
        """ "flash", "ram", "option", "system" or "extra" for an address the ROM serves."""
        for kind in ("flash", "ram", "option", "system", "extra"):
            if self._locate(address, 1, (kind,)) is not None:
                return kind
        return None

    # ------------------------------------------------------------------ ROM checks

    def readable(self, address: int, length: int = 1) -> bool:
        kinds = ("flash", "ram", "option", "system", "extra")
        return self._locate(address, length, kinds) is not None

    def writable(self, address: int, length: int = 1) -> bool:
        return self._locate(address, length, ("flash", "ram", "option")) is not None

    def runnable(self, address: int) -> bool:
        """Go accepts a vector table in flash or in the RAM left to the host."""
        return self._locate(address, 8, ("flash", "ram")) is not None

    def read(self, address: int, length: int) -> bytes:
        found = self._locate(address, length, ("flash", "ram", "option", "system", "extra"))
        if found is None:
            raise ValueError(f"0x{address:08X}+{length} is not readable")
        buffer, index = found
        return bytes(buffer[index : index + length])

    # ------------------------------------------------------------------ option bytes

    def _complement_offset(self, offset: int) -> int:
        layout = self.chip.option_bytes.layout
        if layout == "pairs":
            return offset + 1
        if layout == "f4":
            return offset + 2
        return (offset & ~7) + 4 + (offset & 3)  # g0: a word, then its complement

    def option_value(self, offset: int) -> int:
        """The byte at ``offset`` as loaded: 0xFF when its complement does not match."""
        value = self.option[offset]
        complement = self.option[self._complement_offset(offset)]
        return value if value ^ complement == 0xFF else ERASED

    def _set_option(self, offset: int, value: int) -> None:
        self.option[offset] = value
        self.option[self._complement_offset(offset)] = value ^ 0xFF

    @property
    def rdp_level(self) -> int:
        ob = self.chip.option_bytes
        return ob.rdp_level(self.option_value(ob.rdp_offset))

    def set_rdp_level(self, level: int) -> None:
        ob = self.chip.option_bytes
        if level == 2 and ob.rdp_level2 is None:
            raise ValueError(f"{self.chip.family_name} has no read-out protection level 2")
        value = {0: ob.rdp_level0, 1: RDP_LEVEL1, 2: ob.rdp_level2}[level]
        self._set_option(ob.rdp_offset, value)

    def write_options(self, address: int, data: bytes) -> None:
        """Write Memory into the option bytes: the ROM erases them all first."""
        offset = address - self.chip.option_bytes.address
        self.option[:] = bytes([ERASED]) * len(self.option)
        self.option[offset : offset + len(data)] = data
        self.stats.option_writes += 1

    # ------------------------------------------------------------------ write protection

    def _wrp_bit(self, unit: EraseUnit) -> int:
        """The write-protection bit (Write Protect "sector" number) covering ``unit``."""
        chip = self.chip
        if chip.wrp_granule == 0:
            return unit.index
        bits = 8 * len(chip.option_bytes.wrp_offsets)
        # F1 high density: the last bit covers the rest of the flash (RM0008 WRP3).
        return min((unit.address - chip.flash_base) // chip.wrp_granule, bits - 1)

    def _g0_areas(self) -> list[tuple[int, int, int]]:
        """(bank, first page, last page) of each active G0 WRP area."""
        areas = []
        for n, offset in enumerate(self.chip.option_bytes.wrp_offsets):
            word = int.from_bytes(bytes(self.option_value(offset + i) for i in range(4)), "little")
            start, end = word & G0_WRP_FIELD, (word >> 16) & G0_WRP_FIELD
            if start <= end:
                areas.append((n // 2, start, end))
        return areas

    def _bank_page(self, unit: EraseUnit) -> tuple[int, int]:
        per_bank = len(self.chip.erase_units) // self.chip.banks
        position = self.chip.erase_units.index(unit)
        return divmod(position, per_bank)

    def is_protected(self, unit: EraseUnit) -> bool:
        ob = self.chip.option_bytes
        if ob.layout == "g0":
            bank, page = self._bank_page(unit)
            return any(b == bank and s <= page <= e for b, s, e in self._g0_areas())
        bit = self._wrp_bit(unit)
        byte = self.option_value(ob.wrp_offsets[bit // 8])
        set_ = bool(byte >> (bit % 8) & 1)
        return set_ != ob.wrp_active_low

    def protected_units(self) -> list[int]:
        return [u.index for u in self.chip.erase_units if self.is_protected(u)]

    def write_protect(self, sectors: list[int]) -> bool:
        """Write Protect: exactly ``sectors`` become protected (sector = WRP bit; on G0 a
        page). False when the set does not fit the option bytes (G0: two areas a bank)."""
        ob = self.chip.option_bytes
        if ob.layout == "g0":
            return self._g0_protect(sectors)
        wanted = set(sectors)
        for n, offset in enumerate(ob.wrp_offsets):
            byte = 0
            for bit in range(8):
                protect = 8 * n + bit in wanted
                byte |= (protect != ob.wrp_active_low) << bit
            self._set_option(offset, byte)
        return True

    def _g0_protect(self, pages: list[int]) -> bool:
        ob = self.chip.option_bytes
        per_bank = len(self.chip.erase_units) // self.chip.banks
        runs: dict[int, list[list[int]]] = {}
        for page in sorted(set(p for p in pages if p < len(self.chip.erase_units))):
            bank, within = divmod(page, per_bank)
            bank_runs = runs.setdefault(bank, [])
            if bank_runs and bank_runs[-1][1] == within - 1:
                bank_runs[-1][1] = within
            else:
                bank_runs.append([within, within])
        if any(len(r) > 2 for r in runs.values()):
            return False
        for n, offset in enumerate(ob.wrp_offsets):
            bank_runs = runs.get(n // 2, [])
            start, end = bank_runs[n % 2] if n % 2 < len(bank_runs) else (G0_WRP_FIELD, 0)
            word = (start | end << 16).to_bytes(4, "little")
            for i, value in enumerate(word):
                self._set_option(offset + i, value)
        return True

    def write_unprotect(self) -> None:
        ob = self.chip.option_bytes
        for offset in ob.wrp_offsets:
            span = 4 if ob.layout == "g0" else 1
            for i in range(span):
                self.option[offset + i] = ob.default[offset + i]
                complement = self._complement_offset(offset + i)
                self.option[complement] = ob.default[complement]

    # ------------------------------------------------------------------ flash and RAM

    def write(self, address: int, data: bytes) -> str:
        """Write Memory's effect: "ok", "refused" (flash there not erased) or
        "protected" (ACKed, nothing written). Option bytes go to write_options."""
        kind = self.kind_of(address)
        if kind == "ram":
            found = self._locate(address, len(data), ("ram",))
            assert found is not None
            buffer, index = found
            buffer[index : index + len(data)] = data
            return "ok"
        if kind == "option":
            self.write_options(address, data)
            return "ok"
        offset = address - self.chip.flash_base
        units = self.chip.units_for(address, address + len(data))
        protected = [u for u in units if self.is_protected(u)]
        if protected:
            # The controller refuses the protected part; the rest of the block is written.
            self.stats.protected += [u.index for u in protected]
        if self.overwrite == "nack" and not self._programmable(offset, data):
            self.stats.refused_writes += 1
            return "refused"
        for unit in units:
            if unit in protected:
                continue
            start = max(unit.address, address) - self.chip.flash_base
            end = min(unit.end, address + len(data)) - self.chip.flash_base
            new = data[start - offset : end - offset]
            if self.overwrite == "and":
                new = bytes(a & b for a, b in zip(self.flash[start:end], new, strict=True))
            self.flash[start:end] = new
        self.stats.flash_writes += 1
        return "protected" if protected else "ok"

    def _programmable(self, offset: int, data: bytes) -> bool:
        # Flash programs whole words (half-word on F0/F1, double word on G0): a word may be
        # written if it is still erased or already holds exactly this data.
        width = self.chip.program_width
        for start in range(0, len(data), width):
            new = data[start : start + width]
            old = self.flash[offset + start : offset + start + len(new)]
            if old != new and any(b != ERASED for b in old):
                return False
        return True

    def erase_unit(self, unit: EraseUnit) -> bool:
        """Erase one page or sector; False (and no change) when it is write-protected."""
        if self.is_protected(unit):
            self.stats.protected.append(unit.index)
            return False
        offset = unit.address - self.chip.flash_base
        self.flash[offset : offset + unit.size] = bytes([ERASED]) * unit.size
        self.stats.erased.append(unit.index)
        return True

    def mass_erase(self, bank: int | None = None) -> None:
        """Erase the flash (or one bank); write-protected pages keep their data."""
        per_bank = len(self.chip.erase_units) // self.chip.banks
        for n, unit in enumerate(self.chip.erase_units):
            if bank is None or n // per_bank == bank:
                self.erase_unit(unit)
        self.stats.mass_erases += 1

    def readout_unprotect(self) -> None:
        """Readout Unprotect: all flash and RAM cleared, option bytes back to default."""
        self.flash[:] = bytes([ERASED]) * len(self.flash)
        self.ram[:] = bytes(len(self.ram))
        self.option[:] = self.chip.option_bytes.default
        self.set_rdp_level(0)
        self.stats.mass_erases += 1

    def load(self, segments: list[tuple[int, bytes]]) -> None:
        """Put an image into flash as if programmed earlier. Addresses below the flash
        base count from it (a .bin read at 0). Raises ValueError if it does not fit."""
        base = self.chip.flash_base
        for address, data in segments:
            offset = address if address < base else address - base
            if offset + len(data) > len(self.flash):
                raise ValueError(
                    f"image data at 0x{base + offset:08X}+{len(data)} runs past the end of "
                    f"{self.chip.name}'s {self.chip.flash_size // 1024} KiB flash"
                )
            self.flash[offset : offset + len(data)] = data
