"""The STM32F103 "MSC bootloader" (Telekatz/MSC-stm32f103-bootloader): an empty FAT16
drive known by its volume label, which takes a raw .bin.

It flashes data sectors in the order they arrive, from the first that starts with a
stack pointer, at the application start on, and resets 500 ms after the last. So the
image goes out as one contiguous file in one write, and only once per session: a second
file would be flashed behind the first. Facts: docs/protocols/uf2-msc.md.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, ClassVar

from flashsh.chips.uf2 import MscBuild, family_text, msc_builds, msc_builds_for_label
from flashsh.errors import ImageError, TargetError
from flashsh.images.uf2 import Uf2Image
from flashsh.images.vectors import check_vector_table
from flashsh.numbers import hexaddr, human_size
from flashsh.protocols.base import MemoryMap, Region, TargetInfo
from flashsh.protocols.msc_drive import MscDrive
from flashsh.transports.msc_volume import DriveVolume, Mounts, read_mounts

if TYPE_CHECKING:
    from flashsh.images import Image


class StmMscDrive(MscDrive):
    """The STM32F103 MSC bootloader (Telekatz/MSC-stm32f103-bootloader): an empty FAT16
    drive known by its label; a .bin copied to it is flashed from the application start."""

    name: ClassVar[str] = "msc"
    what = "the STM32 MSC bootloader"
    no_read_reason = (
        "the STM32 MSC bootloader keeps no file on its drive and has no read command: it "
        "can only take a .bin and reboot"
    )

    def __init__(
        self, volume: DriveVolume, target: str, chip: str | None, mounts: Mounts = read_mounts
    ) -> None:
        super().__init__(volume, target, chip, mounts)
        self.build, self.others = _pick_build(volume.label, chip)
        #: One file per session: the bootloader's write pointer never rewinds.
        self.written = False

    def identify(self) -> TargetInfo:
        build = self.build
        details: dict[str, object] = {
            "drive": self.volume.description,
            "label": self.volume.label,
            "build": build.name,
            "app_start": hexaddr(build.app_start),
            "read_back": "none",
        }
        if self.others:
            details["same_label"] = ", ".join(
                f"{b.name} ({hexaddr(b.app_start)})" for b in self.others
            )
        return TargetInfo(
            protocol="msc",
            bootloader=f"STM32 MSC bootloader ({build.name} build)",
            chip="STM32F103",
            link=self.volume.description,
            how=f"volume label {self.volume.label}",
            details=details,
        )

    def memory_map(self) -> MemoryMap:
        build = self.build
        region = Region(
            "flash",
            build.flash_base,
            build.flash_size,
            page_size=BIN_SECTOR,
            erase_size=build.page_size,
            access="w",
        )
        return MemoryMap(
            (region,),
            bootloader=(build.flash_base, build.app_start),
            app_start=build.app_start,
            app_start_fixed=True,
            size_hint=f"the {build.name} build of the MSC bootloader assumes "
            f"{human_size(build.flash_size)} of flash",
        )

    def check_request(self, image: Image, *, diff: bool) -> None:
        """What the bootloader cannot take at all, ``force`` or not: a second file, a
        .uf2 for another family, an image whose first word is no stack pointer."""
        if self.written:
            raise TargetError(
                "the STM32 MSC bootloader takes one file per session: a second one would "
                "be flashed behind the first",
                "double-tap reset, connect again, then program",
            )
        if isinstance(image, Uf2Image) and image.family not in (None, STM32F1_FAMILY):
            raise ImageError(
                f"{image.source} is for {family_text(image.family)}, but this drive is an "
                "STM32F103 MSC bootloader",
                "use the .bin built for this board",
            )
        first = image.segments[0] if image.segments else None
        at_start = first is not None and first.address == self.build.app_start
        if at_start and not looks_like_stack_pointer(first.data[:4]):
            raise ImageError(
                f"{image.source or 'the image'} does not start with a vector table "
                f"(first word 0x{first.data[:4][::-1].hex()}): the MSC bootloader "
                "ignores a file that does not",
                f"give the firmware's .bin, built for {hexaddr(self.build.app_start)}",
            )

    def check_image(self, image: Image) -> None:
        try:
            check_vector_table(image, self.build.app_start)
        except ImageError as err:
            fits = [b for b in self.others if _linked_for(image, b.app_start)]
            if not fits:
                raise
            raise ImageError(
                f"{err.message}; that is where the {fits[0].name} build of the bootloader "
                f"starts it ({hexaddr(fits[0].app_start)})",
                f"if the bootloader is that build, connect with --chip {fits[0].name}",
            ) from None

    def file_for(self, pages: list[tuple[int, bytes]]) -> tuple[str, bytes]:
        """The image from the application start as one contiguous .bin, gaps 0xFF."""
        start = self.build.app_start
        if pages[0][0] != start:
            raise TargetError(
                f"the STM32 MSC bootloader writes a file from {hexaddr(start)} on; this "
                f"image starts at {hexaddr(pages[0][0])}",
                f"give a .bin built for {hexaddr(start)}",
            )
        content = bytearray()
        for address, data in pages:
            content += b"\xff" * (address - start - len(content)) + data
        self.written = True
        return self.volume.free_name("FIRMWARE", "BIN"), bytes(content)

    def reopened(self, again: MscDrive) -> None:
        self.written = False

    def not_gone_error(self, name: str) -> TargetError:
        return TargetError(
            f"wrote {name} to {self.volume.description}, but the drive is still there after "
            f"{self.vanish_timeout:g} s: the bootloader saw no sector that starts a vector "
            "table",
            f"check that the .bin is the firmware built for {hexaddr(self.build.app_start)}; "
            "double-tap reset before trying again (a second copy would be appended)",
        )


#: The MSC bootloader flashes whole 512-byte sectors of the file.
BIN_SECTOR = 512
#: STM32F103's UF2 family (the MSC bootloader's config.h still names it).
STM32F1_FAMILY = 0x5EE21072


def _pick_build(label: str, chip: str | None) -> tuple[MscBuild, list[MscBuild]]:
    """The build ``chip`` names, else the first with this label; and the other builds
    with the same label and another application start (``STM32``: maplemini)."""
    same = msc_builds_for_label(label)
    if chip:
        build = msc_builds().get(chip.strip().lower())
        if build is None:
            raise TargetError(
                f"no MSC bootloader build {chip!r}", f"builds: {', '.join(msc_builds())}"
            )
    else:
        build = same[0]
    return build, [b for b in same if b.app_start != build.app_start]


def looks_like_stack_pointer(word: bytes) -> bool:
    """The MSC bootloader's own test for the sector that starts an image (Telekatz
    ghostfat.c write_block_bin): bytes 2-3, masked with 0x2FFE, equal 0x2000."""
    return len(word) == 4 and (word[2] | word[3] << 8) & 0x2FFE == 0x2000


def _linked_for(image: Image, start: int) -> bool:
    """Whether the image's reset handler lies at or above ``start`` but below where the
    image was placed: linked for a lower application start."""
    data = image.segments[0].data if image.segments else b""
    if len(data) < 8:
        return False
    reset = struct.unpack_from("<I", data, 4)[0] & ~1
    return start <= reset < image.start
