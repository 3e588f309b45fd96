"""STM32 option bytes as the ROM's Read Memory returns them: read-out protection level,
user bits and write protection, decoded with the layout in ``flashsh/chips/data/stm32.toml``.

Write protection is counted in the "sectors" the ROM's Write Protect command takes
(AN3155 §3.9): one write-protection bit each, ``wrp_granule`` bytes long (F0, F1: 4 KiB;
on F1 high density the last bit covers the rest of flash), or one flash sector each (F4),
or one page each (G0, whose option bytes hold page ranges instead of bits).
"""

from __future__ import annotations

from flashsh.chips.stm32 import Stm32Chip

Span = tuple[int, int]  # [start, end) byte addresses


def _word(raw: bytes, offset: int) -> int:
    return int.from_bytes(raw[offset : offset + 4], "little")


def sector_count(chip: Stm32Chip) -> int:
    """How many write-protection sectors the flash has."""
    if chip.wrp_granule == 0:
        return len(chip.erase_units)
    if chip.option_bytes.layout == "g0":
        return chip.flash_size // chip.wrp_granule
    bits = 8 * len(chip.option_bytes.wrp_offsets)
    return min(bits, -(-chip.flash_size // chip.wrp_granule))


def sector_span(chip: Stm32Chip, sector: int) -> Span:
    """The flash bytes one write-protection sector covers."""
    if chip.wrp_granule == 0:
        unit = chip.unit(sector)
        assert unit is not None
        return unit.address, unit.end
    granule = chip.wrp_granule
    start = chip.flash_base + sector * granule
    last = sector == 8 * len(chip.option_bytes.wrp_offsets) - 1
    # F1 high density: the last WRP bit protects every page above the others.
    end = chip.flash_end if last and chip.option_bytes.layout == "pairs" else start + granule
    return start, min(end, chip.flash_end)


def sectors_for(chip: Stm32Chip, start: int, end: int) -> list[int]:
    """Write-protection sectors touched by the bytes [start, end)."""
    found = []
    for sector in range(sector_count(chip)):
        low, high = sector_span(chip, sector)
        if low < end and start < high:
            found.append(sector)
    return found


def protected_sectors(chip: Stm32Chip, raw: bytes) -> list[int]:
    """Sectors the option bytes ``raw`` protect."""
    ob = chip.option_bytes
    if ob.layout == "g0":
        return _g0_protected_pages(chip, raw)
    bits = 0
    for index, offset in enumerate(ob.wrp_offsets):
        bits |= raw[offset] << (8 * index)
    if ob.wrp_active_low:
        bits = ~bits
    return [s for s in range(sector_count(chip)) if bits >> s & 1]


def _g0_protected_pages(chip: Stm32Chip, raw: bytes) -> list[int]:
    """G0: WRPxyR words hold a start and an end page (bank-relative); start > end means
    the area is empty (RM0444). The first two areas are in bank 1, the others in bank 2."""
    pages_per_bank = chip.flash_size // chip.wrp_granule // max(chip.banks, 1)
    pages: set[int] = set()
    for index, offset in enumerate(chip.option_bytes.wrp_offsets):
        word = _word(raw, offset)
        first, last = word & 0xFF, (word >> 16) & 0xFF
        bank = index // 2
        if first <= last and bank < chip.banks:
            pages.update(bank * pages_per_bank + p for p in range(first, last + 1))
    return sorted(p for p in pages if p < sector_count(chip))


def spans_text(chip: Stm32Chip, sectors: list[int]) -> str:
    """``0x08000000-0x08001fff, 0x08010000-0x08010fff`` for a list of sectors."""
    merged: list[list[int]] = []
    for sector in sorted(sectors):
        low, high = sector_span(chip, sector)
        if merged and merged[-1][1] == low:
            merged[-1][1] = high
        else:
            merged.append([low, high])
    return ", ".join(f"0x{a:08x}-0x{b - 1:08x}" for a, b in merged) or "none"


def decode(chip: Stm32Chip, raw: bytes) -> dict[str, object]:
    """Everything the option bytes say, as ``options read`` shows it."""
    ob = chip.option_bytes
    rdp = raw[ob.rdp_offset]
    level = ob.rdp_level(rdp)
    wide = any(bit >= 8 for bit in ob.user_bits.values())
    user = int.from_bytes(raw[ob.user_offset : ob.user_offset + (2 if wide else 1)], "little")
    sectors = protected_sectors(chip, raw)
    result: dict[str, object] = {
        "address": ob.address,
        "raw": raw.hex(" "),
        "readout_protection": level,
        "rdp_byte": rdp,
        "user": {name: user >> bit & 1 for name, bit in sorted(ob.user_bits.items())},
        "write_protected_sectors": sectors,
        "write_protected": spans_text(chip, sectors),
    }
    if ob.layout == "pairs":
        # Each value byte is stored with its complement; a broken pair makes the chip
        # report an option-byte error and fall back to safe defaults.
        result["complements_ok"] = all(
            raw[i] ^ raw[i + 1] == 0xFF for i in range(0, len(raw) - 1, 2)
        )
    return result


def level_text(level: int | None) -> str:
    return {
        0: "0 (not protected)",
        1: "1 (flash cannot be read, written or erased through the ROM)",
        2: "2 (permanent: the ROM no longer runs)",
    }.get(level if level is not None else -1, "unknown")
