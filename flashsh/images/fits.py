"""Whether an image fits a target, decided from the MemoryMap alone, before any write."""

from __future__ import annotations

from flashsh.errors import FlashshError, ImageError
from flashsh.images.image import Image
from flashsh.numbers import hexaddr, human_size
from flashsh.protocols.base import MemoryMap

#: STM32 application starts that name a bootloader: an image built for one of them and
#: offered to another bootloader was built for the wrong board set-up.
KNOWN_STARTS = {
    0x08000800: "the F1 HID bootloader's application start",
    0x08001000: "Katapult's 4 KiB offset",
    0x08002000: "the stm32duino (Maple) bootloader's application start",
    0x08004000: "the start behind a 16 KiB bootloader (F4 HID bootloader, MSC bootloader)",
    0x08005000: "the old 20 KiB Maple bootloader's application start",
    0x08008000: "the start behind a 32 KiB bootloader",
}


def check_fits(image: Image, memory_map: MemoryMap, *, allow_bootloader: bool = False) -> None:
    """Raise ImageError unless every byte of ``image`` lies inside its region and, for
    flash, outside the bootloader. ``allow_bootloader`` skips the bootloader check, for
    comparing against a full-flash dump."""
    try:
        region = memory_map.region(image.region)
    except FlashshError as err:
        raise ImageError(
            f"{image.source} holds {image.region} data, but this target has no {image.region}",
            err.hint,
        ) from None
    name = image.source or "the image"
    last = hexaddr(region.end - 1)
    if image.size > region.size:
        raise ImageError(
            f"{name} is larger than the {region.name}: {human_size(image.size)} of data, "
            f"the {region.name} holds {human_size(region.size)}",
            memory_map.size_hint or "check that it was built for this chip",
        )
    if image.start < region.start:
        raise ImageError(
            f"{name}: data at {hexaddr(image.start)} is below the chip's {region.name} "
            f"({region.name} starts at {hexaddr(region.start)})",
            f"give the address, e.g. {hexaddr(memory_map.app_start)}"
            if image.format == "bin"
            else "check that it was built for this chip",
        )
    if image.end > region.end:
        beyond = next(max(s.address, region.end) for s in image.segments if s.end > region.end)
        raise ImageError(
            f"{name}: data beyond the chip's {region.name} at {hexaddr(beyond)} "
            f"({region.name} ends at {last})",
            memory_map.size_hint
            or (
                "check the address given"
                if image.format == "bin"
                else "check that it was built for this chip"
            ),
        )
    if region.name == "flash" and memory_map.bootloader and not allow_bootloader:
        _check_bootloader(image, memory_map, name)
    fixed = region.name == "flash" and memory_map.app_start_fixed and not allow_bootloader
    if fixed and image.start != memory_map.app_start:
        whose = KNOWN_STARTS.get(image.start)
        known = f" ({whose})" if whose else ""
        raise ImageError(
            f"{name} starts at {hexaddr(image.start)}{known}, but this bootloader starts the "
            f"application at {hexaddr(memory_map.app_start)}",
            "build the firmware for that start (Klipper: the bootloader offset in "
            "menuconfig), or give a .bin without an address",
        )


def _check_bootloader(image: Image, memory_map: MemoryMap, name: str) -> None:
    assert memory_map.bootloader is not None
    low, high = memory_map.bootloader
    for segment in image.segments:
        if segment.address < high and segment.end > low:
            at = max(segment.address, low)
            span = f"{hexaddr(low)}-{hexaddr(high - 1)}"
            # A bootloader at the top of flash (optiboot) caps the application; one at the
            # bottom (Katapult, most USB loaders) means the application starts above it.
            if high <= memory_map.app_start:
                rule = f"the application must start at {hexaddr(high)} or above"
                hint = "build the firmware for the bootloader's offset"
                if image.format == "bin":
                    hint = f"leave out the address and it goes to {hexaddr(memory_map.app_start)}"
            else:
                rule = f"the application must end below {hexaddr(low)}"
                hint = (
                    "flash the application alone, not a file that includes the bootloader "
                    "(e.g. not *.with_bootloader.hex)"
                )
            raise ImageError(
                f"{name}: data at {hexaddr(at)} is inside the bootloader ({span}); {rule}", hint
            )
