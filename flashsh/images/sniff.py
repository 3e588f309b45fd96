"""Recognising a file's format from its first bytes, only to suggest a fix.

Formats are chosen by extension or ``--format`` and never by guessing: a misnamed file
should stop with a clear message rather than be flashed in a way nobody asked for.
"""

from __future__ import annotations

import re

_HEX_RECORD = re.compile(rb"\s*:[0-9A-Fa-f]{10,}\s*$")
# UF2 block header: magic start words 0x0A324655 ("UF2\n") and 0x9E5D5157, little-endian.
_UF2_MAGIC = b"UF2\n\x57\x51\x5d\x9e"


def guess_format(data: bytes) -> str | None:
    """Name the format ``data`` looks like (``elf``, ``hex``, ``uf2``, ``dfu``), or None."""
    if data.startswith(b"\x7fELF"):
        return "elf"
    if data.startswith(_UF2_MAGIC):
        return "uf2"
    if data.startswith(b"DfuSe") or _has_dfu_suffix(data):
        return "dfu"
    first_line = data.lstrip(b"\xef\xbb\xbf").split(b"\n", 1)[0]
    if _HEX_RECORD.match(first_line):
        return "hex"
    return None


def hint_for_wrong_format(data: bytes, expected: str) -> str | None:
    """A hint for a file that failed to read as ``expected``, if it looks like another."""
    guess = guess_format(data)
    if guess is not None and guess != expected:
        return f"it looks like {_NAMES.get(guess, guess)}; rename it or use --format {guess}"
    if expected != "bin" and _looks_binary(data):
        return "it looks like raw binary; use --format bin and give the address"
    return None


_NAMES = {"elf": "an ELF file", "hex": "Intel HEX", "uf2": "a UF2 file", "dfu": "a DFU file"}


def _has_dfu_suffix(data: bytes) -> bool:
    # DFU 1.1 suffix: ... "UFD" signature, then bLength (16 or more) and the CRC.
    return len(data) >= 16 and data[-8:-5] == b"UFD" and data[-5] >= 16


def _looks_binary(data: bytes) -> bool:
    head = data[:512]
    return any(b < 0x09 or 0x0E <= b < 0x20 for b in head)
