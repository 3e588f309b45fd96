"""STM32 parts as the ROM bootloader sees them, loaded from ``data/stm32.toml``.

The TOML's header describes the schema. Family, device (one PID) and part tables merge
into one ``Stm32Chip``; look parts up with ``stm32_part("stm32f103c8")`` or
``stm32_by_pid(0x410)`` (which gives the PID group's largest member, as a host that has
only read Get ID knows no more).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from flashsh.chips import _load
from flashsh.errors import TargetError

Range = tuple[int, int]  # [first, last] inclusive
Times = tuple[float, float]  # (typical, max)


@dataclass(frozen=True)
class EraseUnit:
    """One page or sector: the index Erase / Extended Erase takes, and where it lies."""

    index: int
    address: int
    size: int

    @property
    def end(self) -> int:
        return self.address + self.size


@dataclass(frozen=True)
class OptionBytes:
    """Where the option bytes are and what their bytes mean (see the TOML header)."""

    address: int
    size: int
    layout: str
    rdp_offset: int
    rdp_level0: int
    rdp_level2: int | None
    user_offset: int
    user_bits: dict[str, int]
    wrp_offsets: tuple[int, ...]
    wrp_active_low: bool
    default: bytes

    @property
    def end(self) -> int:
        return self.address + self.size

    def rdp_level(self, value: int) -> int:
        """Read-out protection level (0, 1 or 2) an RDP byte stands for."""
        if value == self.rdp_level0:
            return 0
        return 2 if value == self.rdp_level2 else 1


@dataclass(frozen=True)
class Stm32Chip:
    key: str
    name: str
    pid: int
    family: str
    family_name: str
    flash_base: int
    flash_size: int
    flash_size_register: int
    uid_address: int
    erase: str  # "page" or "sector"
    erase_units: tuple[EraseUnit, ...]
    banks: int
    ram_base: int
    ram_size: int
    bootloader_ram: Range
    system_memory: Range
    readable_extra: tuple[Range, ...]
    option_bytes: OptionBytes
    protocol_version: int
    commands: tuple[int, ...]
    bootloader_id: int | None
    bootloader_id_address: int
    write_align: int
    program_width: int
    program_us: Times
    page_erase_ms: Times | None
    sector_erase_ms: dict[int, Times]
    mass_erase_ms: Times
    wrp_granule: int
    unconfirmed: frozenset[str]

    # ------------------------------------------------------------------ memory map

    @property
    def flash_end(self) -> int:
        return self.flash_base + self.flash_size

    @property
    def ram_end(self) -> int:
        return self.ram_base + self.ram_size

    @property
    def extended_erase(self) -> bool:
        """True when the ROM lists Extended Erase (0x44) rather than Erase (0x43)."""
        return 0x44 in self.commands

    def unit(self, index: int) -> EraseUnit | None:
        """The page or sector Erase calls ``index``, or None if there is none."""
        for unit in self.erase_units:
            if unit.index == index:
                return unit
        return None

    def unit_at(self, address: int) -> EraseUnit | None:
        """The page or sector holding ``address``, or None outside flash."""
        for unit in self.erase_units:
            if unit.address <= address < unit.end:
                return unit
        return None

    def units_for(self, start: int, end: int) -> list[EraseUnit]:
        """Pages or sectors touched by the bytes [start, end)."""
        return [u for u in self.erase_units if u.address < end and start < u.end]

    def erase_ms(self, unit: EraseUnit) -> Times:
        """(typical, max) time to erase one page or sector."""
        if self.page_erase_ms is not None:
            return self.page_erase_ms
        return self.sector_erase_ms[unit.size // 1024]

    def program_ms(self, length: int) -> Times:
        """(typical, max) time to program ``length`` bytes of flash."""
        words = -(-length // self.program_width)
        return (words * self.program_us[0] / 1000, words * self.program_us[1] / 1000)


def _merge(*levels: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    unconfirmed: set[str] = set()
    for level in levels:
        for key, value in level.items():
            if key == "unconfirmed":
                unconfirmed.update(value)
            elif isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
    merged["unconfirmed"] = unconfirmed
    return merged


def _option_bytes(raw: dict[str, Any], unconfirmed: set[str]) -> OptionBytes:
    unconfirmed.update(f"option_bytes.{key}" for key in raw.get("unconfirmed", ()))
    default = bytes(raw["default"])
    if len(default) != raw["size"]:
        raise ValueError(f"option-byte default is {len(default)} bytes, not {raw['size']}")
    return OptionBytes(
        address=raw["address"],
        size=raw["size"],
        layout=raw["layout"],
        rdp_offset=raw["rdp_offset"],
        rdp_level0=raw["rdp_level0"],
        rdp_level2=raw.get("rdp_level2"),
        user_offset=raw["user_offset"],
        user_bits=dict(raw["user_bits"]),
        wrp_offsets=tuple(raw["wrp_offsets"]),
        wrp_active_low=raw["wrp_active_low"],
        default=default,
    )


def _erase_units(raw: dict[str, Any]) -> tuple[EraseUnit, ...]:
    base, size = raw["flash_base"], raw["flash_size"]
    units = []
    if raw["erase"] == "sector":
        address = base
        for index, kib in enumerate(raw["sectors_kib"]):
            if address >= base + size:
                break
            units.append(EraseUnit(index, address, kib * 1024))
            address += kib * 1024
        return tuple(units)
    page = raw["page_size"]
    count = size // page
    banks = raw.get("banks", 1)
    per_bank = count // banks
    for n in range(count):
        bank, within = divmod(n, per_bank)
        index = within if bank == 0 else raw["bank2_first_page"] + within
        units.append(EraseUnit(index, base + n * page, page))
    return tuple(units)


def _times(value: list[float] | None) -> Times | None:
    return None if value is None else (float(value[0]), float(value[1]))


def _build(key: str, raw: dict[str, Any], family: str) -> Stm32Chip:
    unconfirmed = set(raw["unconfirmed"])
    return Stm32Chip(
        key=key,
        name=raw["name"],
        pid=raw["pid"],
        family=family,
        family_name=raw["family_name"],
        flash_base=raw["flash_base"],
        flash_size=raw["flash_size"],
        flash_size_register=raw["flash_size_register"],
        uid_address=raw["uid_address"],
        erase=raw["erase"],
        erase_units=_erase_units(raw),
        banks=raw.get("banks", 1),
        ram_base=raw["ram_base"],
        ram_size=raw["ram_size"],
        bootloader_ram=tuple(raw["bootloader_ram"]),
        system_memory=tuple(raw["system_memory"]),
        readable_extra=tuple(tuple(r) for r in raw["readable_extra"]),
        option_bytes=_option_bytes(raw["option_bytes"], unconfirmed),
        protocol_version=raw["protocol_version"],
        commands=tuple(raw["commands"]),
        bootloader_id=raw.get("bootloader_id"),
        bootloader_id_address=raw["bootloader_id_address"],
        write_align=raw["write_align"],
        program_width=raw["program_width"],
        program_us=_times(raw["program_us"]),
        page_erase_ms=_times(raw.get("page_erase_ms")),
        sector_erase_ms={int(k): _times(v) for k, v in raw.get("sector_erase_ms", {}).items()},
        mass_erase_ms=_times(raw["mass_erase_ms"]),
        wrp_granule=raw["wrp_granule"],
        unconfirmed=frozenset(unconfirmed),
    )


@cache
def _tables() -> dict[str, Any]:
    return _load("stm32.toml")


def _chip(key: str, level: str) -> Stm32Chip:
    tables = _tables()
    if level == "parts":
        part = tables["parts"][key]
        device = tables["devices"][part["device"]]
    else:
        part, device = {}, tables["devices"][key]
    family = tables["families"][device["family"]]
    # The family's "name" is the family name; a device or part name wins for the chip.
    family_fields = {k: v for k, v in family.items() if k != "name"}
    raw = _merge(family_fields, device, part)
    raw["family_name"] = family["name"]
    return _build(key, raw, device["family"])


@cache
def stm32_parts() -> dict[str, Stm32Chip]:
    """Every orderable part in the data, by key (``stm32f103c8``)."""
    return {key: _chip(key, "parts") for key in _tables()["parts"]}


@cache
def stm32_devices() -> dict[int, Stm32Chip]:
    """Every PID group, by PID, each as its largest member."""
    chips = (_chip(key, "devices") for key in _tables()["devices"])
    return {chip.pid: chip for chip in chips}


def stm32_part(name: str) -> Stm32Chip:
    """Look a part up by key or name, case-insensitively (``stm32f103c8``, ``STM32F103C8``).
    Raises TargetError listing the known parts."""
    wanted = name.strip().lower()
    for key, chip in stm32_parts().items():
        if wanted in (key, chip.name.lower()):
            return chip
    known = ", ".join(sorted(stm32_parts()))
    raise TargetError(f"unknown STM32 part {name!r}", f"known parts: {known}")


def stm32_by_pid(pid: int) -> Stm32Chip:
    """The PID group Get ID names, as its largest member. Raises TargetError."""
    try:
        return stm32_devices()[pid]
    except KeyError:
        known = ", ".join(f"0x{p:03X}" for p in sorted(stm32_devices()))
        raise TargetError(
            f"STM32 product ID 0x{pid:03X} is a chip flashsh has no data for",
            f"known product IDs: {known}",
        ) from None
