"""Fuse and lock work over a Session, as plain functions that return dicts.

A write is two steps so that a person can be asked in between: ``plan_*`` reads what the
chip holds, works out the new bytes and runs the guard (raising FuseGuardError unless
forced); :func:`apply` writes the bytes that differ and reads every one back. The shell,
scripts and a bootloader-burning flow all call these the same way::

    plan = fuse_ops.plan_preset(session, "klipper")
    fuse_ops.apply(session, plan)      # program the bootloader, then:
    fuse_ops.apply(session, fuse_ops.plan_lock(session, plan.lock_after))
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from flashsh import fuses
from flashsh.chips.fuses import FuseByte, FusePart, Preset, fuse_part
from flashsh.errors import TargetError, UnsupportedError, VerifyError
from flashsh.numbers import parse_int
from flashsh.protocols.base import Capability
from flashsh.session import Session

#: Write order: the extended and high fuse first, the clock last, lock bits after fuses
#: (LB mode 2/3 would freeze the fuses).
WRITE_ORDER = ("efuse", "hfuse", "lfuse", "lock")
SHOW_ORDER = ("lfuse", "hfuse", "efuse", "lock")


@dataclass
class FusePlan:
    """What a write would change: old and new value per byte, and the guard's remarks."""

    part: FusePart
    current: dict[str, int]
    new: dict[str, int]
    warnings: list[str] = field(default_factory=list)
    lock_after: int | None = None  # a preset's lock value, for after the bootloader

    @property
    def changes(self) -> list[tuple[FuseByte, int, int]]:
        """(byte, old, new) for each byte that differs on the bits the chip has."""
        out = []
        for name in WRITE_ORDER:
            if name in self.new:
                byte = self.part.byte(name)
                if not fuses.masked_equal(byte, self.current[name], self.new[name]):
                    out.append((byte, self.current[name], self.new[name]))
        return out

    def text(self) -> str:
        """Old -> new for people, with the warnings below."""
        shown = [n for n in SHOW_ORDER if n in self.new]
        lines = [
            fuses.diff_text(self.part.byte(n), self.current[n], self.new[n])
            if any(b.name == n for b, _, _ in self.changes)
            else f"{n:<6}0x{self.current[n]:02x}  unchanged"
            for n in shown
        ]
        return "\n".join(lines + [f"warning: {w}" for w in self.warnings])


def part_of(session: Session) -> FusePart:
    return fuse_part(session.info.chip)


def _require_write(session: Session) -> None:
    # Some bootloaders read fuses but cannot write them (the Mega 2560's): Capability.FUSES
    # means both. Reads simply ask, and the bootloader raises its own UnsupportedError.
    if Capability.FUSES not in session.capabilities:
        raise UnsupportedError(
            f"{session.info.bootloader} cannot write fuses or lock bits",
            "use an ISP programmer (STK500v2, AVR ISP mkII)",
        )


def _read(session: Session, names: Iterable[str]) -> dict[str, int]:
    """Read the fuses and/or the lock byte, as ``names`` asks."""
    wanted = set(names)
    values: dict[str, int] = {}
    with session.use() as bootloader:
        if wanted - {"lock"}:
            values.update(bootloader.read_fuses())
        if "lock" in wanted:
            values["lock"] = bootloader.read_lock()
    return values


def read_fuses(session: Session) -> dict[str, Any]:
    """Read and decode every fuse byte the chip has."""
    part = part_of(session)
    values = _read(session, part.fuses)
    return {
        "chip": part.name,
        "fuses": {n: fuses.decode(b, values[n]) for n, b in part.fuses.items() if n in values},
    }


def read_lock(session: Session) -> dict[str, Any]:
    part = part_of(session)
    value = _read(session, ["lock"])["lock"]
    return {"chip": part.name, "lock": fuses.decode(part.lock, value)}


def byte_value(text: str) -> int:
    """Parse a fuse or lock byte: ``0xd8``, ``216``, ``0b11011000``."""
    try:
        value = parse_int(text)
    except ValueError as exc:
        raise TargetError(str(exc)) from None
    if not 0 <= value <= 0xFF:
        raise TargetError(f"{text} is not a byte value", "fuse and lock values are 0x00..0xff")
    return value


def plan_values(
    session: Session,
    values: dict[str, int],
    *,
    force: bool = False,
    refusals: Iterable[str] = (),
    lock_after: int | None = None,
) -> FusePlan:
    """Plan writing whole bytes (``{"hfuse": 0xd8}``); FuseGuardError when refused."""
    part = part_of(session)
    for name in values:
        part.byte(name)  # unknown names fail before the chip is touched
    _require_write(session)
    current = _read(session, values)
    return _plan(part, current, values, force, refusals, lock_after)


def _plan(
    part: FusePart,
    current: dict[str, int],
    values: dict[str, int],
    force: bool,
    refusals: Iterable[str] = (),
    lock_after: int | None = None,
) -> FusePlan:
    missing = [n for n in values if n not in current]
    if missing:
        raise TargetError(f"{', '.join(missing)} could not be read from {part.name}")
    plan = FusePlan(part, current, dict(values), lock_after=lock_after)
    if "lock" in values:
        _check_lock_reachable(part.lock, current["lock"], values["lock"])
    plan.warnings = fuses.guard(part, plan.changes, force=force, refusals=refusals)
    return plan


def _check_lock_reachable(lock: FuseByte, old: int, new: int) -> None:
    # Lock bits go back to 1 only through chip erase; a write cannot unprogram them.
    raising = ~old & new & lock.mask
    if raising:
        names = ", ".join(f.name for f in lock.fields if f.mask & raising)
        raise TargetError(
            f"lock 0x{old:02x} -> 0x{new:02x} would unprogram bits of {names}, "
            "and lock bits return to 1 only through a chip erase",
            "`mass_erase` through an ISP programmer first (a chip erase: flash goes too)",
        )


def plan_write(session: Session, name: str, value: int, *, force: bool = False) -> FusePlan:
    return plan_values(session, {name: value}, force=force)


def plan_set(session: Session, assignments: Iterable[str], *, force: bool = False) -> FusePlan:
    """Plan ``FIELD=VALUE`` edits of the fuse bytes (syntax in :mod:`flashsh.fuses`)."""
    part = part_of(session)
    texts = list(assignments)
    wanted = [fuses.parse_assignment(part.fuses.values(), t) for t in texts]
    _require_write(session)
    current = _read(session, part.fuses)
    new = fuses.apply_assignments(part.fuses.values(), current, texts)
    return _plan(part, current, {a.byte.name: new[a.byte.name] for a in wanted}, force)


def find_preset(presets: dict[str, Preset], name: str, chip: str, kind: str) -> Preset:
    try:
        return presets[name.lower()]
    except KeyError:
        have = ", ".join(presets) or "none"
        raise TargetError(f"no {kind} preset {name!r} for {chip}", f"presets: {have}") from None


def plan_preset(session: Session, name: str, *, force: bool = False) -> FusePlan:
    """Plan a named set of fuse values from the chip data (``klipper``, ``factory``)."""
    part = part_of(session)
    preset = find_preset(part.presets, name, part.name, "fuse")
    refusals = []
    if preset.unconfirmed:
        refusals.append(
            f"preset {preset.name} is not confirmed for {part.name} ({preset.unconfirmed})"
        )
    return plan_values(
        session, preset.values, force=force, refusals=refusals, lock_after=preset.lock_after
    )


def plan_lock(session: Session, value: int | str, *, force: bool = False) -> FusePlan:
    """Plan a lock byte given as a number or a lock preset name (``bootloader-protect``)."""
    part = part_of(session)
    if isinstance(value, str):
        if value[:1].isdigit():
            value = byte_value(value)
        else:
            value = find_preset(part.lock_presets, value, part.name, "lock").values["lock"]
    return plan_values(session, {"lock": value}, force=force)


def apply(session: Session, plan: FusePlan) -> dict[str, object]:
    """Write what the plan changes, read it all back and compare on the bits the chip
    has; VerifyError names the byte, the value expected and the value read."""
    changes = plan.changes
    after: dict[str, int] = {}
    if changes:
        _require_write(session)
        with session.use() as bootloader:
            for byte, _, new in changes:
                if byte.name == "lock":
                    bootloader.write_lock(new)
                else:
                    bootloader.write_fuse(byte.name, new)
            after = _read(session, [byte.name for byte, _, _ in changes])  # same hold
    written = {}
    for byte, old, new in changes:
        got = after.get(byte.name)
        if got is None or not fuses.masked_equal(byte, got, new):
            actual = "nothing" if got is None else f"0x{got:02x}"
            raise VerifyError(
                f"{byte.name} reads back {actual} after writing 0x{new:02x} "
                f"(compared under mask 0x{byte.mask:02x})",
                "check the programmer's wiring; lock bits in LB mode 2/3 freeze the fuses",
            )
        written[byte.name] = {"old": old, "new": new, "read_back": got, **fuses.decode(byte, got)}
    unchanged = [n for n in plan.new if n not in written]
    return {
        "chip": plan.part.name,
        "written": written,
        "unchanged": unchanged,
        "warnings": plan.warnings,
        "lock_after": plan.lock_after,
    }
