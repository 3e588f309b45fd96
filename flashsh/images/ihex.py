"""Intel HEX: record types 00-05 as in Intel's "Hexadecimal Object File Format
Specification", Rev. A (1988).

Reading is done here rather than with the ``intelhex`` package. Its loader does report line
numbers, but lumps "no colon", "bad hex digit" and "too short" into one error, names only
the second line of an overlap, keeps every byte as a dict entry, accepts a file with no
end-of-file record and silently drops records after one (which hides a badly joined
app + bootloader file). A record is a dozen lines to decode, and doing it here lets every
message say exactly what is wrong on which line. Writing uses ``intelhex``: its output is
standard and needs no diagnostics.
"""

from __future__ import annotations

import io
import re

from intelhex import IntelHex

from flashsh.errors import ImageError
from flashsh.images.image import Image
from flashsh.images.sniff import hint_for_wrong_format
from flashsh.numbers import hexaddr

# Record types (spec section "General Record Format").
DATA = 0x00
END_OF_FILE = 0x01
EXTENDED_SEGMENT_ADDRESS = 0x02
START_SEGMENT_ADDRESS = 0x03
EXTENDED_LINEAR_ADDRESS = 0x04
START_LINEAR_ADDRESS = 0x05

_PAYLOAD_SIZE = {
    END_OF_FILE: 0,
    EXTENDED_SEGMENT_ADDRESS: 2,
    START_SEGMENT_ADDRESS: 4,
    EXTENDED_LINEAR_ADDRESS: 2,
    START_LINEAR_ADDRESS: 4,
}
_TYPE_NAME = {
    END_OF_FILE: "end-of-file",
    EXTENDED_SEGMENT_ADDRESS: "extended segment address",
    START_SEGMENT_ADDRESS: "start segment address",
    EXTENDED_LINEAR_ADDRESS: "extended linear address",
    START_LINEAR_ADDRESS: "start linear address",
}
_HEX_RUN = re.compile(rb"[0-9A-Fa-f]*")
_DAMAGED = "the file is damaged; rebuild or download it again"

# (address, data, line) for each data record, in file order.
_Record = tuple[int, bytes, int]


def read_hex(
    source: str, data: bytes, *, address: int | None = None, default_address: int = 0
) -> Image:
    """Decode an Intel HEX file; the addresses come from the file.

    Raises ImageError naming the file and line for a bad record, a bad checksum, data given
    twice, records after the end-of-file record, or a missing end-of-file record.
    """
    records: list[_Record] = []
    base = 0  # added to each data record's 16-bit offset
    segmented = False  # after a type 02 record offsets wrap inside the 64 KiB segment
    entry: int | None = None
    end_line: int | None = None
    for number, raw_line in enumerate(data.splitlines(), start=1):
        line = raw_line.strip()
        if not line:
            continue
        if end_line is not None:
            # Stray text after the end is harmless; another record means lost data.
            if line.startswith(b":"):
                raise ImageError(
                    f"{source} line {number}: record after the end-of-file record "
                    f"of line {end_line}",
                    f"two hex files were joined; delete line {end_line} if the rest belongs "
                    "to the image",
                )
            continue
        offset, kind, payload = _decode(source, number, line, data)
        if kind == DATA:
            records.extend(_place(source, number, base, offset, payload, segmented))
        elif kind == END_OF_FILE:
            end_line = number
        elif kind == EXTENDED_SEGMENT_ADDRESS:
            base, segmented = int.from_bytes(payload, "big") << 4, True
        elif kind == EXTENDED_LINEAR_ADDRESS:
            base, segmented = int.from_bytes(payload, "big") << 16, False
        elif kind == START_SEGMENT_ADDRESS:
            entry = (int.from_bytes(payload[:2], "big") << 4) + int.from_bytes(payload[2:], "big")
        else:  # START_LINEAR_ADDRESS
            entry = int.from_bytes(payload, "big")
    if end_line is None:
        raise ImageError(
            f"{source} has no end-of-file record (:00000001FF); it may be cut short",
            "build or download it again; if it is complete, add the line :00000001FF",
        )
    return Image(_join(source, records), source=source, format="hex", entry=entry)


def _decode(source: str, number: int, line: bytes, data: bytes) -> tuple[int, int, bytes]:
    """Check one stripped record; return (16-bit offset, record type, payload)."""
    where = f"{source} line {number}"
    if not line.startswith(b":"):
        hint = (hint_for_wrong_format(data, "hex") if number == 1 else None) or _DAMAGED
        raise ImageError(f"{where}: not an Intel HEX record (no ':' at the start)", hint)
    body = line[1:]
    digits = _HEX_RUN.match(body)
    assert digits is not None  # the pattern matches the empty string
    if digits.end() < len(body):
        bad = body[digits.end() : digits.end() + 1].decode("latin-1")
        raise ImageError(
            f"{where}: {bad!r} in column {digits.end() + 2} is not a hex digit", _DAMAGED
        )
    if len(body) < 10 or len(body) % 2:
        raise ImageError(
            f"{where}: record too short or cut off ({len(body)} hex digits after ':')", _DAMAGED
        )
    record = bytes.fromhex(body.decode("ascii"))
    count, kind = record[0], record[3]
    if len(record) != count + 5:
        raise ImageError(
            f"{where}: bad length: the record says {count} data bytes but holds {len(record) - 5}",
            _DAMAGED,
        )
    # The checksum byte makes all bytes of the record sum to 0 modulo 256.
    if sum(record) & 0xFF:
        should = -sum(record[:-1]) & 0xFF
        raise ImageError(
            f"{where}: bad checksum 0x{record[-1]:02x} (should be 0x{should:02x})", _DAMAGED
        )
    payload = record[4:-1]
    if kind != DATA:
        if kind not in _PAYLOAD_SIZE:
            raise ImageError(
                f"{where}: unknown record type 0x{kind:02x} (Intel HEX has types 00 to 05)",
                "the file may be in another format (Motorola S-record, TI-TXT) or damaged",
            )
        if count != _PAYLOAD_SIZE[kind]:
            raise ImageError(
                f"{where}: a type {kind:02x} ({_TYPE_NAME[kind]}) record holds "
                f"{_PAYLOAD_SIZE[kind]} bytes, this one {count}",
                _DAMAGED,
            )
    return int.from_bytes(record[1:3], "big"), kind, payload


def _place(
    source: str, number: int, base: int, offset: int, payload: bytes, segmented: bool
) -> list[_Record]:
    """Absolute placement of one data record, split where a segment offset wraps."""
    if segmented and offset + len(payload) > 0x10000:
        # Spec: in segment mode the offset wraps to the segment's start, not onward.
        split = 0x10000 - offset
        return [(base + offset, payload[:split], number), (base, payload[split:], number)]
    if base + offset + len(payload) > 1 << 32:
        raise ImageError(
            f"{source} line {number}: data runs past the 4 GiB address space", _DAMAGED
        )
    return [(base + offset, payload, number)]


def _join(source: str, records: list[_Record]) -> list[tuple[int, bytes]]:
    """Merge data records into contiguous segments; name both lines of a doubled address."""
    records.sort(key=lambda r: (r[0], r[2]))
    segments: list[tuple[int, bytearray]] = []
    reach, reach_line = -1, 0  # highest end so far and the line whose record got there
    for address, payload, line in records:
        if not payload:
            continue
        if address < reach:
            first, second = sorted((reach_line, line))
            raise ImageError(
                f"{source} line {second}: address {hexaddr(address)} is given a second time "
                f"(first at line {first})",
                "the file holds overlapping data, often two images merged badly; rebuild it",
            )
        if address == reach:
            segments[-1][1].extend(payload)
        else:
            segments.append((address, bytearray(payload)))
        reach, reach_line = address + len(payload), line
    return [(a, bytes(d)) for a, d in segments]


def encode_hex(address: int, data: bytes) -> bytes:
    """Return ``data`` at ``address`` as Intel HEX, 16 bytes a record, with type 04
    records once addresses pass 64 KiB."""
    image = IntelHex()
    image.frombytes(data, offset=address)
    text = io.StringIO()
    image.write_hex_file(text, write_start_addr=False)
    return text.getvalue().encode("ascii")
