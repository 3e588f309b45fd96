"""STM32 ROM DFU devices by what the host sees of them (``data/dfuse.toml``): the
bcdDevice and the alternate settings' memory-layout strings."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from flashsh.chips import _load
from flashsh.errors import TargetError
from flashsh.protocols.dfu_layout import Layout, parse_layout


@dataclass(frozen=True)
class DfuSeRomChip:
    key: str
    name: str
    bcd_device: int
    alts: tuple[str, ...]
    part: str | None
    serial: str
    sim: bool
    klipper_mcu: str
    unconfirmed: frozenset[str]

    @property
    def flash(self) -> Layout:
        return parse_layout(self.alts[0])


def flash_signature(layout: Layout) -> tuple[tuple[int, int], ...]:
    """What identifies a flash layout: its units, not how the string spelled them
    (``128*002Kg`` and ``128*0002Kg`` are the same flash)."""
    return tuple((s.start, s.size) for s in layout.segments for _ in range(s.count))


@cache
def dfuse_chips() -> dict[str, DfuSeRomChip]:
    return {
        key: DfuSeRomChip(
            key=key,
            name=raw["name"],
            bcd_device=raw.get("bcd_device", 0),
            alts=tuple(raw["alts"]),
            part=raw.get("part"),
            serial=raw.get("serial", ""),
            sim=raw.get("sim", False),
            klipper_mcu=raw.get("klipper_mcu", key),
            unconfirmed=frozenset(raw.get("unconfirmed", ())),
        )
        for key, raw in _load("dfuse.toml")["chips"].items()
    }


def simulated_chip(key: str) -> DfuSeRomChip:
    """A chip ``sim://dfuse`` can be. Raises TargetError naming the choices."""
    chips = {k: c for k, c in dfuse_chips().items() if c.sim}
    try:
        return chips[key.lower()]
    except KeyError:
        raise TargetError(
            f"no simulated DfuSe chip {key!r}", f"valid: {', '.join(chips)}"
        ) from None


def identify_rom(
    flash: Layout, bcd_device: int, *, st_rom: bool = True
) -> tuple[str, DfuSeRomChip | None]:
    """Name the chip behind a ROM from its flash layout and bcdDevice. Returns the name
    and, when exactly one known ROM fits, its table (for option-byte decoding). Another
    vendor's DfuSe device (``st_rom`` False) is named by its flash only."""
    if not st_rom:
        return f"a chip with {flash.size // 1024} KiB flash ({flash.summary()})", None
    signature = flash_signature(flash)
    fits = [c for c in dfuse_chips().values() if flash_signature(c.flash) == signature]
    exact = [c for c in fits if c.bcd_device == bcd_device]
    if len(exact) == 1:
        return exact[0].name, exact[0]
    if fits:
        names = " or ".join(dict.fromkeys(c.name for c in fits))
        return names, fits[0] if len(fits) == 1 else None
    return f"STM32 with {flash.size // 1024} KiB flash ({flash.summary()})", None
