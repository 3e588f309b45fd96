"""Chip facts, loaded from the TOML files in ``data/``."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources

from flashsh.errors import TargetError


@dataclass(frozen=True)
class AvrPart:
    """One AVR part: identification and memories (byte addresses)."""

    key: str
    name: str
    signature: bytes
    flash_size: int
    flash_page: int
    eeprom_size: int
    eeprom_page: int
    sram_size: int
    stk500_devcode: int
    chip_erase_ms: int
    pagel: int
    bs2: int
    reset_shared_io: bool
    boot_sizes: tuple[int, ...]

    @property
    def needs_extended_address(self) -> bool:
        """True when flash passes 64 K words, beyond a 16-bit word address."""
        return self.flash_size > 0x20000


def _load(name: str) -> dict:
    text = resources.files("flashsh.chips").joinpath("data", name).read_text("utf-8")
    return tomllib.loads(text)


@cache
def avr_parts() -> dict[str, AvrPart]:
    parts = {}
    for key, raw in _load("avr.toml")["parts"].items():
        fields = dict(raw)
        fields["signature"] = bytes.fromhex(fields["signature"])
        fields["boot_sizes"] = tuple(fields["boot_sizes"])
        parts[key] = AvrPart(key=key, **fields)
    return parts


@cache
def bootloader_facts() -> dict:
    return _load("bootloaders.toml")


def avr_part(name: str) -> AvrPart:
    """Look a part up by key or name, case-insensitively (``atmega328p``, ``ATmega328P``)."""
    wanted = name.strip().lower().replace("-", "")
    for key, part in avr_parts().items():
        if wanted in (key, part.name.lower()):
            return part
    known = ", ".join(sorted(avr_parts()))
    raise TargetError(f"unknown chip {name!r}", f"known chips: {known}")


def avr_part_by_signature(signature: bytes) -> AvrPart:
    for part in avr_parts().values():
        if part.signature == signature:
            return part
    lookalike = _load("avr.toml").get("lookalikes", {}).get(signature.hex())
    what = f"an {lookalike}" if lookalike else "a chip flashsh has no data for"
    raise TargetError(
        f"signature {signature.hex(' ').upper()} is {what}",
        "pass --chip NAME if the bootloader was built for another part",
    )
