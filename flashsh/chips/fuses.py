"""Fuse and lock byte layouts of the AVR parts, loaded from ``data/avr_fuses.toml``.

The TOML holds every fact (bit positions, what codes mean, which settings are dangerous,
presets); this module only turns it into frozen dataclasses. Decoding and the guard that
uses them live in :mod:`flashsh.fuses`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache
from typing import Any

from flashsh.chips import _load, avr_part, avr_parts
from flashsh.errors import TargetError

#: Fuse bytes in the order they are shown; writes go in the reverse order, so that the
#: clock (lfuse) changes last.
FUSE_NAMES = ("lfuse", "hfuse", "efuse")


@dataclass(frozen=True)
class Choice:
    """One code of a multi-bit field, e.g. BOOTSZ ``00`` on the ATmega2560."""

    code: int
    bits: str  # the code as the datasheet writes it: "101"
    name: str | None = None  # symbolic value for `fuse set`
    text: str = ""
    clock: str | None = None  # clock class of a CKSEL code (see [clock_classes])
    sut: Table | None = None  # what SUT means under this CKSEL code
    volts: float | None = None
    words: int | None = None  # BOOTSZ: boot section size in words ...
    start: int | None = None  # ... and its first byte address
    danger: str | None = None
    warn: str | None = None
    unconfirmed: str | None = None


@dataclass(frozen=True)
class Table:
    key: str
    choices: dict[int, Choice]
    unconfirmed: str | None = None


@dataclass(frozen=True)
class Field:
    """A bitfield inside one byte: a one-bit flag or a multi-bit code."""

    name: str
    hi: int
    lo: int
    about: str = ""
    on: str | None = None  # flags: what "programmed (0)" switches on
    table: Table | None = None  # codes: what each value means
    danger_on: str | None = None
    danger_off: str | None = None
    warn_on: str | None = None
    warn_off: str | None = None
    names: tuple[str, ...] = ()  # datasheet names of the bits, high to low, when not FIELDn

    @property
    def bit_names(self) -> tuple[str, ...]:
        """``BOOTSZ1``, ``BOOTSZ0``; a flag's one bit is the field's name."""
        if self.names:
            return self.names
        if self.width == 1:
            return (self.name,)
        return tuple(f"{self.name}{i}" for i in range(self.width - 1, -1, -1))

    @property
    def width(self) -> int:
        return self.hi - self.lo + 1

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.lo

    @property
    def is_flag(self) -> bool:
        return self.on is not None

    @property
    def bits(self) -> str:
        return str(self.hi) if self.hi == self.lo else f"{self.hi}:{self.lo}"

    def get(self, byte: int) -> int:
        return (byte & self.mask) >> self.lo

    def put(self, byte: int, raw: int) -> int:
        return (byte & ~self.mask & 0xFF) | ((raw << self.lo) & self.mask)

    def code_text(self, raw: int) -> str:
        return format(raw, f"0{self.width}b")


@dataclass(frozen=True)
class FuseByte:
    name: str  # lfuse, hfuse, efuse or lock
    fields: tuple[Field, ...]
    mask: int  # the bits the chip really has; the rest read back as 1
    factory: int


@dataclass(frozen=True)
class Preset:
    name: str
    about: str
    values: dict[str, int]  # byte name -> value
    lock_after: int | None = None  # lock to write once the bootloader is in place
    unconfirmed: str | None = None


@dataclass(frozen=True)
class ClockClass:
    key: str
    text: str
    risk: str  # what changing to this class could do to a board


@dataclass(frozen=True)
class FusePart:
    key: str
    name: str
    fuses: dict[str, FuseByte]
    lock: FuseByte
    presets: dict[str, Preset]
    lock_presets: dict[str, Preset]
    clock_classes: dict[str, ClockClass]

    def byte(self, name: str) -> FuseByte:
        """A fuse byte or ``lock`` by name; TargetError names the ones the part has."""
        if name == "lock":
            return self.lock
        try:
            return self.fuses[name]
        except KeyError:
            have = ", ".join(self.fuses)
            raise TargetError(f"{self.name} has no fuse {name!r}", f"it has {have}") from None

    def all_bytes(self) -> tuple[FuseByte, ...]:
        return (*self.fuses.values(), self.lock)


def _bits(text: str) -> tuple[int, int]:
    hi, _, lo = str(text).partition(":")
    return int(hi), int(lo or hi)


def _table(key: str, raw: dict[str, Any]) -> Table:
    choices = {}
    for bits, entry in raw.items():
        if not isinstance(entry, dict):
            continue  # table-level keys such as `unconfirmed`
        fields = {k: v for k, v in entry.items() if k not in ("class", "sut")}
        if "words" in fields:
            fields.setdefault("name", f"{fields['words']}W")
            size = fields["words"] * 2
            fields.setdefault(
                "text", f"{fields['words']} words ({_size(size)}) at 0x{fields['start']:x}"
            )
        choices[int(bits, 2)] = Choice(
            code=int(bits, 2), bits=bits, clock=entry.get("class"), **fields
        )
    return Table(key, choices, raw.get("unconfirmed"))


def _tables(raw: dict[str, Any]) -> dict[str, Table]:
    """All value tables, with each CKSEL code's ``sut`` name replaced by its table."""
    tables = {key: _table(key, entries) for key, entries in raw.items()}
    for key, entries in raw.items():
        choices = dict(tables[key].choices)
        for bits, entry in entries.items():
            if isinstance(entry, dict) and "sut" in entry:
                choices[int(bits, 2)] = replace(choices[int(bits, 2)], sut=tables[entry["sut"]])
        tables[key] = replace(tables[key], choices=choices)
    return tables


def _size(size: int) -> str:
    return f"{size // 1024} KiB" if size >= 1024 else f"{size} B"


def _field(name: str, raw: dict[str, Any], table: Table | None) -> Field:
    hi, lo = _bits(raw["bits"])
    extra = {k: v for k, v in raw.items() if k not in ("bits", "values", "bit_names")}
    names = tuple(raw.get("bit_names", ()))
    return Field(name, hi, lo, table=None if "on" in raw else table, names=names, **extra)


def _byte(name: str, raw: dict[str, Any], fields: dict[str, Field]) -> FuseByte:
    chosen = tuple(fields[f] for f in raw["fields"])
    return FuseByte(name, chosen, raw.get("mask", 0xFF), raw["factory"])


def _presets(raw: dict[str, Any], unconfirmed: str | None = None) -> dict[str, Preset]:
    presets = {}
    for name, entry in raw.items():
        values = {k: v for k, v in entry.items() if k in (*FUSE_NAMES, "lock")}
        if "value" in entry:
            values = {"lock": entry["value"]}
        presets[name] = Preset(
            name,
            entry.get("about", ""),
            values,
            entry.get("lock_after"),
            entry.get("unconfirmed", unconfirmed),
        )
    return presets


@cache
def fuse_parts() -> dict[str, FusePart]:
    data = _load("avr_fuses.toml")
    tables = _tables(data["tables"])
    classes = {k: ClockClass(k, v["text"], v["risk"]) for k, v in data["clock_classes"].items()}
    lock_fields = {
        name: _field(name, data["fields"][name], tables[data["fields"][name]["values"]])
        for name in data["lock"]["fields"]
    }
    lock = _byte("lock", data["lock"], lock_fields)
    names = avr_parts()
    parts = {}
    for key, raw in data["parts"].items():
        chosen = raw.get("values", {})
        fields = {}
        for name, spec in data["fields"].items():
            table_key = chosen.get(name, spec.get("values"))
            fields[name] = _field(name, spec, tables[table_key] if table_key else None)
        fuses = {n: _byte(n, raw[n], fields) for n in FUSE_NAMES if n in raw}
        factory_note = raw.get("factory", {}).get("unconfirmed")
        presets = _presets(raw.get("presets", {}))
        presets["factory"] = Preset(
            "factory",
            "delivery values of a new chip",
            {n: b.factory for n, b in fuses.items()},
            lock_after=None,
            unconfirmed=factory_note,
        )
        parts[key] = FusePart(
            key=key,
            name=names[key].name,
            fuses=fuses,
            lock=lock,
            presets=presets,
            lock_presets=_presets(data["lock"].get("presets", {})),
            clock_classes=classes,
        )
    return parts


def fuse_part(chip: str) -> FusePart:
    """The fuse layout of a chip given by name (``ATmega328P``, ``atmega328p``)."""
    part = avr_part(chip)
    try:
        return fuse_parts()[part.key]
    except KeyError:
        have = ", ".join(p.name for p in fuse_parts().values())
        raise TargetError(f"flashsh has no fuse data for {part.name}", f"it has {have}") from None
