"""UF2 bootloader drives: uf2-samdx1 (SAMD21, SAMD51) and the RP2040 boot ROM.

Pages become one 256-byte block each with the drive's family ID; the bootloader resets
once it has every block. CURRENT.UF2, where the drive has it (uf2-samdx1), is the whole
flash and serves read-back. Facts: docs/protocols/uf2-msc.md.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, ClassVar

from flashsh.chips.uf2 import DriveFamily, drive_family, drive_family_for_board, family_text
from flashsh.errors import ImageError, TargetError, TransportError, UnsupportedError
from flashsh.images.uf2 import BLOCK_SIZE, PAYLOAD, Uf2Image, encode_pages, parse_block
from flashsh.images.vectors import check_vector_table
from flashsh.numbers import hexaddr, human_size
from flashsh.protocols.base import Capability, MemoryMap, Region, TargetInfo
from flashsh.protocols.msc_drive import MscDrive
from flashsh.transports.msc import Uf2Info
from flashsh.transports.msc_volume import DriveVolume, Mounts

if TYPE_CHECKING:
    from flashsh.images import Image

CURRENT_FILE = "CURRENT.UF2"


class Uf2Drive(MscDrive):
    """A UF2 bootloader drive, identified by the Board-ID in INFO_UF2.TXT."""

    name: ClassVar[str] = "uf2"

    def __init__(
        self,
        volume: DriveVolume,
        target: str,
        chip: str | None,
        mounts: Mounts,
        info: Uf2Info,
    ) -> None:
        super().__init__(volume, target, chip, mounts)
        self.info = info
        drive = drive_family(chip) if chip else drive_family_for_board(info.board_id)
        if drive is None:
            raise TargetError(
                f"{volume.description} is a UF2 drive for Board-ID {info.board_id or '(none)'}, "
                "which flashsh has no flash layout for",
                "name its family with --chip (samd21, samd51, rp2040), or copy the .uf2 "
                "to the drive yourself",
            )
        self.drive: DriveFamily = drive
        self.what = f"the {drive.family.name} UF2 drive"
        self.image: Image | None = None
        self._look_at_flash()

    def _look_at_flash(self) -> None:
        """What the drive shows decides what it can do: CURRENT.UF2 means read-back."""
        self.readable = CURRENT_FILE in {n.upper() for n in self.volume.names()}
        self.capabilities = Capability.WRITE
        if self.readable:
            self.capabilities |= Capability.READ
        if self.drive.erase_size > PAYLOAD:
            # SAMD51 erases an 8 KiB block, the RP2040 a 4 KiB sector, around a block.
            self.capabilities |= Capability.PAGE_ERASE_ON_WRITE
        self.no_read_reason = (  # type: ignore[misc]
            None
            if self.readable
            else f"{self.what} has no CURRENT.UF2: nothing on it shows the flash"
        )
        self.flash_size = self._flash_size()

    def reopened(self, again: MscDrive) -> None:
        if isinstance(again, Uf2Drive):
            self.info = again.info
        self._look_at_flash()

    def _flash_size(self) -> int:
        """CURRENT.UF2 is twice the flash (uf2-samdx1); a SAMD part number names it too
        (SAMD21G18A: 2^18 bytes); else the family's default."""
        if self.readable:
            return self.volume.size(CURRENT_FILE) // 2
        match = re.match(r"SAM[DE]\d\d[A-Z](\d\d)", self.info.board_id.upper())
        if match and self.drive.flash_base == 0:
            return 1 << int(match[1])
        return self.drive.flash_size

    def identify(self) -> TargetInfo:
        family = self.drive.family
        details: dict[str, object] = {
            "board_id": self.info.board_id,
            "model": self.info.model,
            "family": str(family),
            "drive": self.volume.description,
            "label": self.volume.label,
            "read_back": CURRENT_FILE if self.readable else "none",
        }
        if self.info.features:
            details["features"] = self.info.features
        return TargetInfo(
            protocol="uf2",
            bootloader=self.info.banner or "UF2 bootloader",
            chip=self._chip_name(),
            link=self.volume.description,
            how=f"INFO_UF2.TXT on {self.volume.description}",
            details=details,
        )

    def _chip_name(self) -> str:
        """The part from the Board-ID's first token (``SAMD21G18A``) when it names one of
        this family, else the family (the RP2040's Board-ID is ``RPI-RP2``)."""
        token = self.info.board_id.split("-")[0].upper()
        name = self.drive.family.name
        return token if token.startswith(name[:4]) else name

    def memory_map(self) -> MemoryMap:
        drive = self.drive
        region = Region(
            "flash",
            drive.flash_base,
            self.flash_size,
            page_size=PAYLOAD,
            erase_size=drive.erase_size,
            access="rw" if self.readable else "w",
        )
        hint = None
        if not self.readable and drive.flash_base != 0:
            hint = (
                f"the {drive.family.name} boot ROM does not say how much flash the board has; "
                f"{human_size(self.flash_size)} is the most it addresses"
            )
        below = drive.app_start > drive.flash_base
        return MemoryMap(
            (region,),
            bootloader=(drive.flash_base, drive.app_start) if below else None,
            app_start=drive.app_start,
            size_hint=hint,
        )

    def check_request(self, image: Image, *, diff: bool) -> None:
        """A .uf2 built for another family is refused, ``force`` or not: the bootloader
        would ignore every block of it."""
        family = self.drive.family
        if isinstance(image, Uf2Image) and image.family not in (None, family.id):
            raise ImageError(
                f"{image.source} is for {family_text(image.family)}, but this drive is a "
                f"{family} board (Board-ID {self.info.board_id})",
                "use the .uf2 built for this board",
            )

    def check_image(self, image: Image) -> None:
        """An image at the application start of an ARM part must begin with a vector
        table linked there."""
        self.image = image
        if self.drive.vector_table:
            check_vector_table(image, self.drive.app_start)

    def read(self, region: Region, address: int, length: int) -> bytes:
        """Read from CURRENT.UF2: the whole flash from its start, one 256-byte block per
        512-byte sector (uf2-samdx1 src/fat.c)."""
        if self.left:
            raise UnsupportedError(
                "the board left its bootloader after the write, and CURRENT.UF2 with it",
                "double-tap reset to bring the drive back, then `verify_image FILE`",
            )
        if not self.readable:
            return super().read(region, address, length)
        base = self.drive.flash_base
        first = (address - base) // PAYLOAD
        count = (address + length - 1 - base) // PAYLOAD - first + 1
        raw = self.volume.read(CURRENT_FILE, first * BLOCK_SIZE, count * BLOCK_SIZE)
        out = bytearray()
        for index in range(count):
            block = parse_block(raw[index * BLOCK_SIZE : (index + 1) * BLOCK_SIZE])
            expected = base + (first + index) * PAYLOAD
            if block is None or block.address != expected or block.payload_size != PAYLOAD:
                raise TransportError(
                    f"CURRENT.UF2 on {self.volume.description} has no block for "
                    f"{hexaddr(expected)}",
                    "double-tap reset and connect again",
                )
            out += block.data
        skip = address - (base + first * PAYLOAD)
        return bytes(out[skip : skip + length])

    def file_for(self, pages: list[tuple[int, bytes]]) -> tuple[str, bytes]:
        """One block per page with this drive's family; a .uf2 whose blocks are this
        family's and already one per page is copied as it is."""
        name = self.volume.free_name("NEW", "UF2")
        family = self.drive.family.id
        image, self.image = self.image, None
        if (
            isinstance(image, Uf2Image)
            and image.copyable
            and (image.family == family or (image.family is None and self.drive.family_optional))
            and pages == [(p.address, p.data) for p in image.pages(PAYLOAD)]
        ):
            self._notes.append(f"copied {image.source} to the drive unchanged, as {name}")
            return name, image.raw
        return name, encode_pages(pages, family)

    def not_gone_error(self, name: str) -> TargetError:
        return TargetError(
            f"wrote {name} to {self.volume.description}, but the drive is still there after "
            f"{self.vanish_timeout:g} s: the bootloader did not take every block",
            f"check that the image is for {self.drive.family} and lies inside flash; "
            "copying it again does no harm",
        )
