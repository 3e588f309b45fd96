"""UF2 family IDs and bootloader-drive facts, loaded from ``data/uf2_families.toml``."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from flashsh.chips import _load
from flashsh.errors import TargetError


@dataclass(frozen=True)
class Uf2Family:
    name: str
    id: int
    description: str
    #: Typical application start behind the usual UF2 bootloader; None where unknown.
    app_start: int | None = None

    def __str__(self) -> str:
        return f"{self.name} (0x{self.id:08x})"


@dataclass(frozen=True)
class DriveFamily:
    """A family whose UF2 bootloader drive flashsh programs."""

    family: Uf2Family
    board_ids: tuple[str, ...]
    flash_base: int
    flash_size: int
    app_start: int
    erase_size: int
    vector_table: bool
    #: Blocks without a family ID are flashed too (uf2-samdx1), or ignored (RP2040).
    family_optional: bool
    current_uf2: bool


@dataclass(frozen=True)
class MscBuild:
    """One build of the STM32F103 MSC bootloader (raw .bin, no UF2)."""

    name: str
    label: str
    app_start: int
    flash_size: int
    page_size: int
    flash_base: int = 0x08000000


@cache
def _table() -> dict:
    return _load("uf2_families.toml")


@cache
def families() -> dict[str, Uf2Family]:
    """Every known family by its short name (``SAMD51``)."""
    return {
        name: Uf2Family(name, raw["id"], raw["description"], raw.get("app_start"))
        for name, raw in _table()["families"].items()
    }


def family_by_id(family_id: int) -> Uf2Family | None:
    return next((f for f in families().values() if f.id == family_id), None)


def family_text(family_id: int | None) -> str:
    """``SAMD51 (0x55114460)``, ``0x12345678 (unknown family)`` or ``no family ID``."""
    if family_id is None:
        return "no family ID"
    found = family_by_id(family_id)
    return str(found) if found else f"0x{family_id:08x} (unknown family)"


def find_family(name_or_id: str | int) -> Uf2Family:
    """A family by short name (any case, ``rp2040``) or ID (``0xe48bff56`` or an int).
    Raises TargetError listing the names."""
    if isinstance(name_or_id, int):
        found = family_by_id(name_or_id)
        if found is None:
            return Uf2Family(f"0x{name_or_id:08x}", name_or_id, "unknown family")
        return found
    text = name_or_id.strip()
    for family in families().values():
        if family.name.lower() == text.lower():
            return family
    try:
        return find_family(int(text, 0))
    except ValueError:
        pass
    raise TargetError(
        f"unknown UF2 family {text!r}",
        f"give a family ID (0x...) or one of: {', '.join(sorted(families()))}",
    )


@cache
def drive_families() -> dict[str, DriveFamily]:
    out = {}
    for name, raw in _table()["drives"].items():
        out[name] = DriveFamily(
            family=families()[name],
            board_ids=tuple(b.upper() for b in raw["board_ids"]),
            flash_base=raw["flash_base"],
            flash_size=raw["flash_size"],
            app_start=raw["app_start"],
            erase_size=raw["erase_size"],
            vector_table=raw["vector_table"],
            family_optional=raw["family_flag"] == "optional",
            current_uf2=raw["current_uf2"],
        )
    return out


def drive_family_for_board(board_id: str) -> DriveFamily | None:
    """The drive family whose Board-ID prefix ``board_id`` starts with (longest wins)."""
    wanted = board_id.strip().upper()
    best: tuple[int, DriveFamily] | None = None
    for drive in drive_families().values():
        for prefix in drive.board_ids:
            if wanted.startswith(prefix) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), drive)
    return best[1] if best else None


def drive_family(name: str) -> DriveFamily:
    """A drive family by name (``samd51``); raises TargetError listing them."""
    for key, drive in drive_families().items():
        if key.lower() == name.strip().lower():
            return drive
    raise TargetError(
        f"flashsh has no drive data for {name!r}",
        f"drive families: {', '.join(sorted(drive_families()))}",
    )


@cache
def msc_builds() -> dict[str, MscBuild]:
    return {name: MscBuild(name, **raw) for name, raw in _table()["msc_builds"].items()}


def msc_builds_for_label(label: str) -> list[MscBuild]:
    """Builds whose volume label is ``label`` (any case), the table's order: the first is
    the default (``STM32`` -> generic, 0x08004000)."""
    return [b for b in msc_builds().values() if b.label.upper() == label.strip().upper()]


def msc_labels() -> frozenset[str]:
    return frozenset(b.label for b in msc_builds().values())
