"""Raw binary: bytes with no address of their own, placed where the caller says."""

from __future__ import annotations

from flashsh.errors import ImageError
from flashsh.images.image import Image


def read_bin(
    source: str, data: bytes, *, address: int | None = None, default_address: int = 0
) -> Image:
    """Place the whole file at ``address``, or at ``default_address`` (the target's
    application start) when none is given. Raises ImageError for a negative address."""
    at = default_address if address is None else address
    if at < 0:
        raise ImageError(f"{source}: cannot place data at negative address {at}")
    return Image([(at, data)], source=source, format="bin")


def encode_bin(address: int, data: bytes) -> bytes:
    """Return the bytes as they are; a .bin does not record ``address``."""
    return bytes(data)
