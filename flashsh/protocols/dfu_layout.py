"""DfuSe memory-layout strings: the interface string of each alternate setting says which
memory it reaches, where, in which pages or sectors, and what may be done to each.

    @Internal Flash  /0x08000000/04*016Kg,01*064Kg,07*128Kg

``@NAME/ADDRESS/SEGMENTS[/ADDRESS/SEGMENTS...]``; each segment is COUNT*SIZE, a
multiplier (``B`` or a space for bytes, ``K``, ``M``) and a type letter ``a``-``g`` whose
low three bits are readable (1), erasable (2), writable (4) (ST UM0424 §4.3.2, as
dfu-util's dfuse_mem.c parses it). Counts and sizes are decimal with leading zeros
(``016`` is sixteen, not an octal fourteen). Strings seen in the wild bend the format:
``01*016 e`` (a space as the multiplier), ``01*64Kg`` (no padding), ``528e`` (no
multiplier), a missing type letter; the parser takes them all and notes what it had to
guess (facts: docs/protocols/dfuse.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from flashsh.errors import ProtocolError

READABLE = 1
ERASABLE = 2
WRITABLE = 4

MULTIPLIERS = {"": 1, " ": 1, "B": 1, "K": 1024, "M": 1024 * 1024}

# COUNT*SIZE, then an optional multiplier (spaces count as "bytes"), then the type letter.
# Anything may trail (some strings carry NULs or spaces at the end).
_SEGMENT = re.compile(r"\s*(\d+)\s*\*\s*(\d+)(\s*)([BKM]?)\s*([a-g]?)")


@dataclass(frozen=True)
class Segment:
    """``count`` pages or sectors of ``size`` bytes from ``start``."""

    start: int
    count: int
    size: int
    flags: int

    @property
    def end(self) -> int:
        return self.start + self.count * self.size

    @property
    def readable(self) -> bool:
        return bool(self.flags & READABLE)

    @property
    def erasable(self) -> bool:
        return bool(self.flags & ERASABLE)

    @property
    def writable(self) -> bool:
        return bool(self.flags & WRITABLE)

    def units(self) -> list[tuple[int, int]]:
        return [(self.start + n * self.size, self.start + (n + 1) * self.size)
                for n in range(self.count)]  # fmt: skip


@dataclass(frozen=True)
class Layout:
    """One alternate setting's memory, as its interface string describes it."""

    #: The name as the device sends it; trailing spaces are part of it.
    raw_name: str
    segments: tuple[Segment, ...]
    #: What had to be guessed from a malformed string.
    notes: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.raw_name.strip()

    @property
    def start(self) -> int:
        return self.segments[0].start

    @property
    def end(self) -> int:
        return self.segments[-1].end

    @property
    def size(self) -> int:
        return sum(s.count * s.size for s in self.segments)

    def groups(self) -> list[tuple[int, int]]:
        """[start, end) of each run of contiguous segments (one per /ADDRESS/ group,
        unless two groups happen to touch)."""
        runs: list[list[int]] = []
        for segment in self.segments:
            if runs and runs[-1][1] == segment.start:
                runs[-1][1] = segment.end
            else:
                runs.append([segment.start, segment.end])
        return [(a, b) for a, b in runs]

    def segment_at(self, address: int) -> Segment | None:
        for segment in self.segments:
            if segment.start <= address < segment.end:
                return segment
        return None

    def units(self, start: int, end: int) -> list[tuple[int, int]]:
        """The pages or sectors [lo, hi) that the bytes [start, end) touch."""
        return [(lo, hi) for s in self.segments if s.start < end and start < s.end
                for lo, hi in s.units() if lo < end and start < hi]  # fmt: skip

    def writable_prefix_end(self) -> int:
        """Where the first writable segment starts: a bootloader on a custom DfuSe
        device lists its own sectors as read-only before the application's."""
        for segment in self.segments:
            if segment.writable:
                return segment.start
        return self.end

    def summary(self) -> str:
        """``4x16K, 1x64K, 7x128K`` (read-only segments marked)."""
        parts = []
        for s in self.segments:
            size = f"{s.size // 1024}K" if s.size % 1024 == 0 else f"{s.size}"
            flags = "" if s.flags == READABLE | ERASABLE | WRITABLE else f" ({flag_text(s.flags)})"
            parts.append(f"{s.count}x{size}{flags}")
        return ", ".join(parts)


def flag_text(flags: int) -> str:
    text = "".join(c for bit, c in ((READABLE, "r"), (ERASABLE, "e"), (WRITABLE, "w"))
                   if flags & bit)  # fmt: skip
    return text or "no access"


def parse_layout(text: str) -> Layout:
    """Parse one memory-layout string. Raises ProtocolError when it names no memory at
    all; tolerates the quirks above, listing them in ``notes``."""
    body = text.rstrip("\0")
    if body.startswith("@"):
        body = body[1:]
    parts = body.split("/")
    if len(parts) < 3:
        raise ProtocolError(f"not a DfuSe memory layout: {text!r}")
    name, rest = parts[0], parts[1:]
    notes: list[str] = []
    segments: list[Segment] = []
    for index in range(0, len(rest) - 1, 2):
        address_text, segment_text = rest[index].strip(), rest[index + 1]
        try:
            address = int(address_text, 16) if address_text.lower().startswith("0x") else None
        except ValueError:
            address = None
        if address is None:
            notes.append(f"start address {address_text!r} is not 0x-hex; group skipped")
            continue
        for item in segment_text.split(","):
            segment = _parse_segment(item, address, notes)
            if segment is not None:
                segments.append(segment)
                address = segment.end
    if len(rest) % 2:
        notes.append(f"trailing {rest[-1]!r} has no segments; ignored")
    if not segments:
        raise ProtocolError(f"DfuSe memory layout {text!r} lists no memory")
    # dfu-util (quirks.c) treats "Device Feature" as readable and writable whatever its
    # letter says: it is a register, not flash to erase.
    if name.strip() == "Device Feature":
        segments = [Segment(s.start, s.count, s.size, READABLE | WRITABLE) for s in segments]
    return Layout(name, tuple(segments), tuple(notes))


def _parse_segment(item: str, start: int, notes: list[str]) -> Segment | None:
    if not item.strip():
        return None
    match = _SEGMENT.match(item)
    if match is None:
        notes.append(f"segment {item!r} is not COUNT*SIZE; ignored")
        return None
    count, size = int(match[1], 10), int(match[2], 10)
    space, multiplier, letter = match[3], match[4], match[5]
    if not multiplier and not space:
        notes.append(f"segment {item!r}: no multiplier, taken as bytes")
    if not letter:
        # dfu-util refuses such a segment; keeping it (with no access) keeps the
        # addresses of the segments after it right.
        notes.append(f"segment {item!r} has no type letter; treated as not accessible")
        flags = 0
    else:
        flags = ord(letter) & 7  # "a" is 0x61: readable; "g" 0x67: all three
    return Segment(start, count, size * MULTIPLIERS[multiplier], flags)
