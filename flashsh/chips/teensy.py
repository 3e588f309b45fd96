"""Teensy boards behind PJRC's HalfKay bootloader, from ``data/teensy.toml``.

HalfKay names the board only through the HID usage of its report descriptor; look a
board up by that usage (``teensy_by_usage(0x1C)``) or by a name the user gives with
``--chip`` (``teensy_model("at90usb1286")``, ``teensy_model("teensypp2")``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from flashsh.chips import _load
from flashsh.errors import TargetError


@dataclass(frozen=True)
class TeensyModel:
    key: str
    name: str
    usage: int
    mcu: str
    part: str | None
    flash_size: int
    code_size: int
    block_size: int
    header: str  # "byte", "block" or "arm" (data/teensy.toml)
    page_ms: tuple[float, float]
    supported: bool
    #: Other names for ``--chip`` (teensy_loader_cli's --mcu spellings).
    aliases: tuple[str, ...] = ()

    @property
    def title(self) -> str:
        """``Teensy++ 2.0 (AT90USB1286)``."""
        return f"{self.name} ({self.mcu})"

    @property
    def header_size(self) -> int:
        return 64 if self.header == "arm" else 2

    @property
    def report_size(self) -> int:
        """Bytes of one write report: header and block."""
        return self.header_size + self.block_size

    def header_for(self, address: int) -> bytes:
        """The address field of the write report for the block at byte ``address``."""
        if self.header == "block":
            return bytes([(address >> 8) & 0xFF, (address >> 16) & 0xFF])
        if self.header == "byte":
            return bytes([address & 0xFF, (address >> 8) & 0xFF])
        return address.to_bytes(3, "little") + bytes(61)

    def address_of(self, header: bytes) -> int:
        """The byte address a write report's address field names."""
        if self.header == "block":
            return (header[0] | header[1] << 8) << 8
        if self.header == "byte":
            return header[0] | header[1] << 8
        return int.from_bytes(header[:3], "little")


@cache
def teensy_models() -> dict[str, TeensyModel]:
    models = {}
    for key, raw in _load("teensy.toml")["models"].items():
        models[key] = TeensyModel(
            key=key,
            name=raw["name"],
            usage=raw["usage"],
            mcu=raw["mcu"],
            part=raw.get("part"),
            flash_size=raw["flash_size"],
            code_size=raw["code_size"],
            block_size=raw["block_size"],
            header=raw["header"],
            page_ms=tuple(raw.get("page_ms", (0.0, 0.0))),  # type: ignore[arg-type]
            supported=raw.get("supported", True),
            aliases=tuple(raw.get("aliases", ())),
        )
    return models


def teensy_by_usage(usage: int) -> TeensyModel | None:
    """The board HalfKay's HID usage names, or None for a usage flashsh does not know."""
    for model in teensy_models().values():
        if model.usage == usage:
            return model
    return None


def teensy_model(name: str) -> TeensyModel:
    """A board by key (``teensypp2``), board name (``Teensy++ 2.0``, ``TEENSY2PP`` as
    teensy_loader_cli spells it) or chip (``at90usb1286``). Only the AVR boards answer to
    their chip's name. Raises TargetError listing the names."""
    wanted = _simple(name)
    for model in teensy_models().values():
        names = {model.key, _simple(model.name), *map(_simple, model.aliases)}
        if model.supported:
            names.add(_simple(model.mcu))
        if wanted in names:
            return model
    known = ", ".join(
        f"{m.key} ({m.part or m.mcu.lower()})" for m in teensy_models().values() if m.supported
    )
    raise TargetError(f"unknown Teensy {name!r}", f"known: {known}")


def _simple(text: str) -> str:
    """``Teensy++ 2.0`` -> ``teensypp20``."""
    return "".join(c for c in text.lower() if c.isalnum() or c == "+").replace("+", "p")
