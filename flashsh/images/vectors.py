"""Whether a Cortex-M image begins with a vector table linked where it is placed.

Every STM32 and SAM bootloader starts an application by loading the stack pointer and
the reset handler from its first two words, so an image linked for another start (built
without the bootloader offset, or for another bootloader) crashes at once. This is the
check made before writing such an image; ``program ... force`` skips it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from flashsh.errors import ImageError
from flashsh.images.fits import KNOWN_STARTS
from flashsh.images.image import Image
from flashsh.numbers import hexaddr


def in_sram(sp: int) -> bool:
    """0x20000000-0x200fffff: SRAM on every STM32 and SAM part these bootloaders serve."""
    return sp >> 20 == 0x200


def check_vector_table(
    image: Image,
    app_start: int,
    *,
    sp_ok: Callable[[int], bool] = in_sram,
    hint: str | None = None,
) -> None:
    """Raise ImageError unless the image placed at ``app_start`` starts with a stack
    pointer ``sp_ok`` accepts and a reset handler inside the image. Images placed
    elsewhere, or too short to hold the two words, are left to other checks."""
    first = image.segments[0] if image.segments else None
    if first is None or first.address != app_start or len(first.data) < 8:
        return
    sp, reset = struct.unpack_from("<II", first.data)
    name = image.source or "the image"
    hint = hint or (
        f"build it for {hexaddr(app_start)} (Klipper: the bootloader offset in "
        "menuconfig), or add `force` to write it anyway"
    )
    if not sp_ok(sp):
        raise ImageError(
            f"{name} does not start with a vector table: its initial stack pointer "
            f"{hexaddr(sp)} is not in SRAM, so the bootloader would not start it",
            hint,
        )
    handler = reset & ~1
    if not image.start <= handler < image.end:
        raise ImageError(
            f"{name} is not linked for {hexaddr(app_start)}: its reset handler is at "
            f"{hexaddr(handler)}{linked_for(handler, image)}",
            hint,
        )


def linked_for(handler: int, image: Image) -> str:
    """``; it looks linked for 0x08002000 (...)`` when a known start explains the handler."""
    for start in sorted(KNOWN_STARTS, reverse=True):
        if start <= handler < start + image.size and start != image.start:
            return f"; it looks linked for {hexaddr(start)} ({KNOWN_STARTS[start]})"
    if 0x08000000 <= handler < 0x08000000 + image.size and image.start != 0x08000000:
        return "; it looks linked for 0x08000000 (no bootloader)"
    return ""
