"""Flash layout behind a Katapult node, from the MCU string it reports
(``data/katapult.toml``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from flashsh.chips import _load

#: Used for an MCU the table does not know: one erase unit per block and the slowest
#: erase any supported line has.
UNKNOWN_ERASE_MS = 4000


@dataclass(frozen=True)
class KatapultFlash:
    mcu: str
    base: int
    size: int
    #: Erase units [start, end) in address order, covering the flash.
    units: tuple[tuple[int, int], ...]
    erase_ms: int
    #: False when the MCU is not in the table and the layout is a guess.
    known: bool = True
    #: Where the size came from: "Kconfig default" or "unknown".
    size_source: str = "Kconfig default"
    #: Smaller page size the line may have (F103), 0 when the layout is exact.
    min_page: int = 0

    @property
    def end(self) -> int:
        return self.base + self.size

    def units_between(self, start: int, end: int) -> list[tuple[int, int]]:
        return [(lo, hi) for lo, hi in self.units if lo < end and start < hi]

    def unit_starts_at(self, address: int) -> bool:
        """Whether a block here may be the first of a page, which the node erases."""
        if self.min_page and (address - self.base) % self.min_page == 0:
            return True
        return any(lo == address for lo, _ in self.units)


def parse_layout(text: str, base: int, size: int) -> tuple[tuple[int, int], ...]:
    """``"16Kx4,64K,128K*"`` from ``base`` up to ``base + size``."""
    units: list[tuple[int, int]] = []
    at, end = base, base + size
    for item in text.split(","):
        match = re.fullmatch(r"(\d+)K(?:x(\d+)|(\*))?", item.strip())
        if not match:
            raise ValueError(f"bad sector layout item {item!r} in {text!r}")
        unit = int(match[1]) * 1024
        count = (end - at) // unit if match[3] else int(match[2] or 1)
        for _ in range(count):
            if at >= end:
                break
            units.append((at, min(at + unit, end)))
            at += unit
    return tuple(units)


@cache
def _table() -> dict:
    return _load("katapult.toml")


def katapult_flash(mcu: str, app_start: int, block_size: int) -> KatapultFlash:
    """The flash behind ``mcu`` (longest matching family prefix)."""
    table = _table()
    name = mcu.lower()
    keys = [k for k in table["families"] if name.startswith(k)]
    if not keys:
        base = app_start & ~0xFFFFF
        size = 0x100000
        units = tuple((a, a + block_size) for a in range(base, base + size, block_size))
        return KatapultFlash(mcu, base, size, units, UNKNOWN_ERASE_MS, False, "unknown")
    family = table["families"][max(keys, key=len)]
    units = parse_layout(family["sectors"], family["base"], family["size"])
    return KatapultFlash(
        mcu,
        family["base"],
        family["size"],
        units,
        family["erase_ms"],
        min_page=family.get("min_page", 0),
    )


def katapult_flash_of_part(mcu: str, part: str) -> KatapultFlash:
    """The exact flash of an STM32 part the user named (``--chip stm32f103rc``), from
    flashsh's STM32 data. Raises TargetError for an unknown part or another line."""
    from flashsh.chips.stm32 import stm32_part
    from flashsh.errors import TargetError

    chip = stm32_part(part)
    if not mcu.lower().startswith(chip.name.lower()[:9]):
        raise TargetError(
            f"--chip {part} is not the line this Katapult was built for ({mcu})",
            "name the part on the board, e.g. --chip stm32f103rc for a " + mcu,
        )
    units = tuple((u.address, u.end) for u in chip.erase_units)
    slowest = max(chip.erase_ms(u)[1] for u in chip.erase_units)
    return KatapultFlash(mcu, chip.flash_base, chip.flash_size, units, int(slowest), True, "--chip")
