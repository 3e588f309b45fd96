"""Parsing and printing of addresses and sizes."""

from __future__ import annotations

_SUFFIXES = {"k": 1024, "m": 1024 * 1024}


def parse_int(text: str) -> int:
    """Parse ``0x1F000``, ``4096``, ``0b101``, ``32K`` or ``1M`` into an int.

    Raises ValueError with the offending text.
    """
    raw = text.strip().replace("_", "")
    scale = 1
    if raw and raw[-1].lower() in _SUFFIXES and not raw.lower().startswith("0x"):
        scale = _SUFFIXES[raw[-1].lower()]
        raw = raw[:-1]
    try:
        value = int(raw, 0)
    except ValueError:
        raise ValueError(f"not a number: {text!r} (use 0x1F000, 4096 or 32K)") from None
    return value * scale


def looks_like_int(text: str) -> bool:
    try:
        parse_int(text)
    except ValueError:
        return False
    return True


def hexaddr(value: int) -> str:
    """Format an address as avrdude and OpenOCD users read it: ``0x7e00``."""
    return f"0x{value:04x}" if value < 0x10000 else f"0x{value:08x}"


def human_size(size: int) -> str:
    if size >= 1024 and size % 1024 == 0:
        return f"{size // 1024} KiB"
    return f"{size} bytes"
