"""Fuse and lock bytes as people read them: decoding, ``FIELD=VALUE`` edits, the guard.

Pure logic over the layouts in :mod:`flashsh.chips.fuses`; nothing here talks to a chip
(that is :mod:`flashsh.fuse_ops`).

``FIELD=VALUE`` syntax (field names as in the datasheet, any case, no spaces):

* one-bit enable fields take ``on`` / ``programmed`` / ``0`` (bit 0, the feature is on)
  or ``off`` / ``unprogrammed`` / ``1`` (bit 1): ``CKDIV8=off``, ``EESAVE=on``;
* multi-bit fields take a symbolic value from the part's table (``BOOTSZ=1024W``,
  ``BOOTSZ=2K`` bytes, ``BODLEVEL=2.7V``, ``CKSEL=crystal-8-16mhz``) or the raw code as
  ``0b101``, ``0x5`` or decimal ``5``. A number of several 0s and 1s without a prefix
  (``BOOTSZ=10``) is refused as ambiguous: binary as in the datasheet, or decimal?
* one bit of a multi-bit field is its datasheet name: ``BOOTSZ1=0``, ``CKSEL0=1``.

The guard judges a change from the value the chip holds now to the new one. It refuses,
unless forced, any change that *introduces*: SPIEN unprogrammed; RSTDISBL, DWEN or WDTON
programmed; a CKSEL code of another clock class than the current one (internal RC,
crystal, 32 kHz crystal, external clock, 128 kHz RC), or a reserved or undecoded code; a
reserved BODLEVEL code; lock bits LB in mode 2/3 (fuses frozen) or BLB0 in mode 2/3/4
(the bootloader can no longer write or read the application). It warns about BODLEVEL
4.3 V, CKDIV8 and OCDEN programmed, BOOTRST unprogrammed and a crystal range change.
Settings the chip already has are not judged again: writing them back changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from flashsh.chips.fuses import Choice, Field, FuseByte, FusePart
from flashsh.errors import TargetError

FORCE_HINT = "--force if you really mean it"
ON_WORDS = ("on", "programmed", "0")
OFF_WORDS = ("off", "unprogrammed", "1")
_SIZE = re.compile(r"(\d+)\s*(w|words?|b|bytes?|k|kb|kib)")


class FuseGuardError(TargetError):
    """A fuse or lock value that could make the board unreachable; --force overrides."""


# ------------------------------------------------------------------ decoding


def bits8(value: int) -> str:
    return f"{value >> 4:04b} {value & 0xF:04b}"


def masked_equal(byte: FuseByte, a: int, b: int) -> bool:
    """Compare two values of ``byte`` on the bits the chip really has: unused bits are
    written as 0 by some tools and read back as 1 (ATmega168 efuse 0x04 reads 0xFC)."""
    return (a & byte.mask) == (b & byte.mask)


def _choice(field: Field, raw: int, byte: FuseByte, value: int) -> Choice | None:
    table = field.table
    if field.name == "SUT":
        # SUT means something only together with the clock source beside it.
        cksel = next((f for f in byte.fields if f.name == "CKSEL"), None)
        source = _choice(cksel, cksel.get(value), byte, value) if cksel else None
        table = source.sut if source else None
    return table.choices.get(raw) if table else None


def decode_field(byte: FuseByte, field: Field, value: int) -> dict[str, object]:
    """One field of ``value``: raw bits, its meaning and, where known, its name."""
    raw = field.get(value)
    out: dict[str, object] = {"bits": field.bits, "raw": raw, "code": field.code_text(raw)}
    if field.is_flag:
        out["on"] = raw == 0
        out["meaning"] = field.on
        return out
    choice = _choice(field, raw, byte, value)
    if choice is not None:
        out["name"] = choice.name
        out["meaning"] = choice.text
        for key in ("words", "start", "volts", "unconfirmed"):
            if getattr(choice, key) is not None:
                out[key] = getattr(choice, key)
        if choice.words is not None:
            out["bytes"] = choice.words * 2
    else:
        out["name"] = None
        out["meaning"] = _undecoded(field)
    return out


def _undecoded(field: Field) -> str:
    if field.name == "SUT":
        return "start-up time code (see the datasheet's table for this clock source)"
    if field.table is not None and field.table.unconfirmed:
        return f"not decoded here: {field.table.unconfirmed}"
    return "not decoded here (see the datasheet)"


def decode(byte: FuseByte, value: int) -> dict[str, object]:
    """A byte as data: value, mask, and each field decoded (for --json and tests)."""
    return {
        "value": value,
        "hex": f"0x{value:02x}",
        "mask": byte.mask,
        "fields": {f.name: decode_field(byte, f, value) for f in byte.fields},
    }


def unused_bits(mask: int) -> str:
    """``0x07`` -> ``7:3``: the bits outside the mask, which read back as 1."""
    free = [i for i in range(7, -1, -1) if not mask & (1 << i)]
    if not free:
        return ""
    return f"{free[0]}:{free[-1]}" if len(free) > 1 else str(free[0])


def _state(field: Field, info: dict[str, object]) -> str:
    if field.is_flag:
        return "on" if info["on"] else "off"
    return str(info.get("name") or "")


def describe(byte: FuseByte, value: int) -> str:
    """``fuse read`` text: the byte, then one line per field."""
    head = f"{byte.name:<6}0x{value:02x}  {bits8(value)}"
    if byte.mask != 0xFF:
        head += f"  (bits {unused_bits(byte.mask)} unused, read as 1)"
    lines = [head]
    for field in byte.fields:
        info = decode_field(byte, field, value)
        note = f" (UNCONFIRMED: {info['unconfirmed']})" if "unconfirmed" in info else ""
        lines.append(
            f"  {field.bits:<4} {field.name:<9}{info['code']:>5}  {_state(field, info):<19}"
            f"{info['meaning']}{note}"
        )
    return "\n".join(lines)


def _short(field: Field, byte: FuseByte, value: int) -> str:
    info = decode_field(byte, field, value)
    if field.is_flag:
        return "on" if info["on"] else "off"
    return str(info.get("name") or info["meaning"])


def diff_text(byte: FuseByte, old: int, new: int) -> str:
    """Old -> new, field by field with the bits of each changed field."""
    head = f"{byte.name:<6}0x{old:02x} -> 0x{new:02x}   {bits8(old)} -> {bits8(new)}"
    if old == new:
        return f"{head}  unchanged"
    lines = [head]
    for field in byte.fields:
        before, after = field.get(old), field.get(new)
        if before == after:
            continue
        what = f"{_short(field, byte, old)} -> {_short(field, byte, new)}"
        if field.is_flag:
            what = f"{field.on}: {what}"
        elif decode_field(byte, field, new).get("name"):
            what += f": {decode_field(byte, field, new)['meaning']}"
        codes = f"{field.code_text(before)} -> {field.code_text(after)}"
        lines.append(f"  {field.bits:<4} {field.name:<9}{codes:<13} {what}")
    unused = ~byte.mask & 0xFF
    if (old ^ new) & unused:
        span = unused_bits(byte.mask)
        low = int(span.split(":")[-1])
        width = (unused >> low).bit_length()
        codes = f"{(old & unused) >> low:0{width}b} -> {(new & unused) >> low:0{width}b}"
        lines.append(f"  {span:<4} {'unused':<9}{codes:<13} not stored by the chip (reads as 1)")
    return "\n".join(lines)


# ------------------------------------------------------------------ FIELD=VALUE


@dataclass(frozen=True)
class Assignment:
    byte: FuseByte
    field: Field
    raw: int
    bit: int | None = None  # one bit of the field (BOOTSZ1=0), counted from its low bit

    @property
    def mask(self) -> int:
        """The bits of the byte this assignment sets."""
        return self.field.mask if self.bit is None else 1 << (self.field.lo + self.bit)

    def apply(self, value: int) -> int:
        if self.bit is None:
            return self.field.put(value, self.raw)
        position = self.field.lo + self.bit
        return (value & ~(1 << position) & 0xFF) | (self.raw << position)


def find_field(bytes_: Iterable[FuseByte], name: str) -> tuple[FuseByte, Field, int | None]:
    """Look ``name`` up (any case) as a field or as one bit of a field (``BOOTSZ1``)."""
    wanted = name.upper()
    candidates = list(bytes_)
    for byte in candidates:
        for field in byte.fields:
            if field.name == wanted:
                return byte, field, None
    if wanted[-1:].isdigit():
        # Datasheet bit names: BOOTSZ1 is bit 1 of BOOTSZ.
        bit = int(wanted[-1])
        for byte in candidates:
            for field in byte.fields:
                if field.name == wanted[:-1] and field.width > 1 and bit < field.width:
                    return byte, field, bit
    names = ", ".join(f.name for b in candidates for f in b.fields)
    raise TargetError(f"no fuse field {name!r} on this chip", f"fields: {names}")


def _number(text: str, field: Field, label: str) -> int:
    if re.fullmatch(r"[01]{2,}", text):
        raise TargetError(
            f"{label} is ambiguous",
            f"write 0b{text} for the binary code; decimal {int(text)} would be 0x{int(text):x}",
        )
    try:
        value = int(text, 0)
    except ValueError:
        value = -1
    if not 0 <= value < 1 << field.width:
        raise TargetError(f"{label}: no such {field.name} value on this chip", _values_hint(field))
    return value


def _values_hint(field: Field) -> str:
    names = ", ".join(value_names(field))
    codes = f"a code 0b{'0' * field.width}..0b{'1' * field.width}"
    return f"values: {names}, or {codes}" if names else f"give {codes}"


def _symbolic(field: Field, text: str) -> int | None:
    table = field.table
    if table is None:
        return None
    word = text.lower()
    for choice in table.choices.values():
        names = {choice.name.lower()} if choice.name else set()
        if choice.volts is not None:
            names |= {f"{choice.volts}", f"{choice.volts}v"}
        if word in names:
            return choice.code
    size = _SIZE.fullmatch(word)
    if size and any(c.words for c in table.choices.values()):
        amount, unit = int(size.group(1)), size.group(2)
        words = {"w": amount, "b": amount / 2, "k": amount * 512}[unit[0]]
        for choice in table.choices.values():
            if choice.words == words:
                return choice.code
    return None


def value_names(field: Field) -> list[str]:
    """Symbolic values ``FIELD=`` accepts, for completion and error hints."""
    if field.is_flag:
        return ["on", "off"]
    if field.table is None:
        return []
    return [c.name for c in sorted(field.table.choices.values(), key=lambda c: -c.code) if c.name]


def parse_assignment(bytes_: Iterable[FuseByte], text: str) -> Assignment:
    """Parse ``FIELD=VALUE``; TargetError says which part is wrong."""
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise TargetError(f"{text!r} is not FIELD=VALUE", "e.g. BOOTSZ=1024W or CKDIV8=off")
    byte, field, bit = find_field(bytes_, name.strip())
    value = value.strip()
    label = f"{name.upper()}={value}"
    if field.is_flag or bit is not None:
        word = value.lower()
        if word in ON_WORDS or word in OFF_WORDS:
            raw = 0 if word in ON_WORDS else 1
            if bit is not None and word not in ("0", "1"):
                raise TargetError(f"{label}: a single bit takes 0 or 1")
            return Assignment(byte, field, raw, bit)
        raise TargetError(
            f"{label}: {name.upper()} takes on or off",
            "on = programmed, bit 0; off = unprogrammed, bit 1",
        )
    raw = _symbolic(field, value)
    if raw is None:
        raw = _number(value, field, label)
    return Assignment(byte, field, raw)


def apply_assignments(
    bytes_: Iterable[FuseByte], current: dict[str, int], texts: Iterable[str]
) -> dict[str, int]:
    """New byte values after ``FIELD=VALUE`` edits of ``current``; the bytes not touched
    keep their value. A field given twice is an error."""
    candidates = list(bytes_)
    new = dict(current)
    touched: dict[str, int] = {}
    for text in texts:
        assignment = parse_assignment(candidates, text)
        name = assignment.byte.name
        if touched.get(name, 0) & assignment.mask:
            raise TargetError(f"{text}: {assignment.field.name} is given twice")
        touched[name] = touched.get(name, 0) | assignment.mask
        if name not in new:
            raise TargetError(f"{name} could not be read, so {assignment.field.name} cannot change")
        new[name] = assignment.apply(new[name])
    return new


# ------------------------------------------------------------------ the guard


@dataclass
class Verdict:
    refusals: list[str]
    warnings: list[str]


def check_change(part: FusePart, byte: FuseByte, old: int, new: int) -> Verdict:
    """What writing ``new`` over ``old`` would do that the guard refuses or warns about."""
    verdict = Verdict([], [])
    where = f"{byte.name} 0x{old:02x} -> 0x{new:02x}"
    for field in byte.fields:
        before, after = field.get(old), field.get(new)
        if before == after:
            continue
        if field.is_flag:
            programs = after == 0
            danger = field.danger_on if programs else field.danger_off
            warn = field.warn_on if programs else field.warn_off
            action = f"{'program' if programs else 'unprogram'} {field.name}"
            if danger:
                verdict.refusals.append(f"{where} would {action}: {danger}")
            if warn:
                verdict.warnings.append(f"{where} would {action}: {warn}")
            continue
        if field.name == "CKSEL":
            _check_clock(part, field, before, after, where, verdict)
            continue
        choice = field.table.choices.get(after) if field.table else None
        what = f"{where} would set {field.name} to {field.code_text(after)}"
        if choice is None:
            if field.table is not None and field.table.unconfirmed:
                verdict.warnings.append(f"{what}, which is not decoded for {part.name}")
            continue
        if choice.danger:
            verdict.refusals.append(f"{what} ({choice.text}): it {choice.danger}")
        if choice.warn:
            verdict.warnings.append(f"{what} ({choice.text}): it {choice.warn}")
    return verdict


def _check_clock(
    part: FusePart, field: Field, before: int, after: int, where: str, verdict: Verdict
) -> None:
    table = field.table
    old = table.choices.get(before) if table else None
    new = table.choices.get(after) if table else None
    old_class = old.clock if old and old.clock else "unknown"
    new_class = new.clock if new and new.clock else "unknown"
    old_text = old.text if old else f"code {field.code_text(before)}"
    new_text = new.text if new else f"code {field.code_text(after)} (not decoded)"
    move = f"{where} would move CKSEL {field.code_text(before)} -> {field.code_text(after)}"
    move += f" ({old_text} -> {new_text})"
    if new_class != old_class or new_class in ("reserved", "unknown"):
        verdict.refusals.append(f"{move}: {part.clock_classes[new_class].risk}")
    else:
        verdict.warnings.append(f"{move}: check that it suits the oscillator on the board")


def guard(
    part: FusePart,
    changes: Iterable[tuple[FuseByte, int, int]],
    *,
    force: bool = False,
    refusals: Iterable[str] = (),
) -> list[str]:
    """Check (byte, old, new) changes; raise FuseGuardError naming every refused setting,
    or, with ``force``, return them among the warnings."""
    refused = list(refusals)
    warnings: list[str] = []
    for byte, old, new in changes:
        verdict = check_change(part, byte, old, new)
        refused += verdict.refusals
        warnings += verdict.warnings
    if refused and not force:
        raise FuseGuardError("refused: " + "; ".join(refused), FORCE_HINT)
    return [f"forced: {r}" for r in refused] + warnings
