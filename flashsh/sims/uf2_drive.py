"""Simulated bootloader drives: a FAT16 image file, or a directory standing for a mounted
drive, with the chip behind it taking what is written the way the real bootloader does.

- :class:`Uf2Chip` follows uf2-samdx1 ``write_block`` (src/fat.c): a block counts when
  its three magics match and its family is this chip's or absent; it is flashed only
  when not "not main flash", payload 256, 256-aligned and inside the application area;
  blocks aimed elsewhere are still counted; once every ``blockNo`` below ``numBlocks``
  has been seen the board resets. SAMD21 rewrites one 256-byte row, SAMD51 erases its
  8 KiB block the first time a changed row arrives (keeping rows seen unchanged before:
  src/flash_samd51.c). With ``rp2040`` rules (pico-bootrom bootrom/virtual_disk.c) the
  family ID is required, a new ``numBlocks`` starts a new transfer, and the 4 KiB
  sector around a block is erased the first time the transfer touches it.
- :class:`MscBinChip` follows the STM32 MSC bootloader (Telekatz ghostfat.c
  ``write_block_bin``): sectors at LBA 0x44 and below are ignored; data sectors too,
  until one starts with a stack pointer; from then on each one is flashed 512 bytes
  after the last, in arrival order. It resets 500 ms after the last sector, which here
  is as soon as the writer stops and looks.

An image drive sees every sector as it is written, in order (through the
``flashsh.transports.msc_volume`` watcher hook); a directory drive reads the file when
it is synced, 512 bytes at a time, as the device would receive it. An image written
while nothing watched it is read afterwards by ``scan``: the new files' clusters in
file order. No time passes.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from flashsh.chips.uf2 import drive_family, msc_builds
from flashsh.images.uf2 import FLAG_FAMILY_ID, FLAG_NOT_MAIN_FLASH, PAYLOAD, Block, parse_block
from flashsh.transports.fat16 import SECTOR, FatVolume, format_volume
from flashsh.transports.msc_volume import unwatch, watch

#: uf2-samdx1 inc/uf2.h: the block bitmap's size beyond the flash's own blocks.
EXTRA_BLOCKS = 100
#: Telekatz ghostfat.c: sectors up to this LBA hold the ghost FAT and are never flashed.
MSC_LAST_SYSTEM_LBA = 0x44
#: Filler for the bootloader area, so that a test sees it was not touched.
BOOTLOADER_BYTE = 0xB0


class Uf2Chip:
    """Flash behind a UF2 drive and what its bootloader does with each sector."""

    def __init__(
        self,
        family: int,
        flash_base: int,
        flash_size: int,
        app_start: int,
        erase_size: int,
        rules: str = "samdx1",
    ) -> None:
        if rules not in ("samdx1", "rp2040"):
            raise ValueError(f"rules must be samdx1 or rp2040, not {rules!r}")
        self.family = family
        self.base = flash_base
        self.size = flash_size
        self.app_start = app_start
        self.erase_size = erase_size
        self.rules = rules
        self.flash = bytearray([0xFF]) * flash_size
        self.flash[: app_start - flash_base] = bytes([BOOTLOADER_BYTE]) * (app_start - flash_base)
        self.flashed: list[int] = []  # addresses of blocks written, in order
        self.start_session()

    def start_session(self) -> None:
        """A fresh bootloader run: nothing seen, nothing erased."""
        self.num_blocks = 0
        self.seen: set[int] = set()
        self.erased: set[int] = set()
        self.row_same: set[int] = set()
        self.done = False

    def read(self, address: int, length: int) -> bytes:
        return bytes(self.flash[address - self.base : address - self.base + length])

    def take(self, sector: bytes) -> None:
        block = parse_block(sector)
        if block is None or self.done:
            return  # file-system traffic, or after the reset
        if self.rules == "samdx1":
            self._take_samdx1(block)
        else:
            self._take_rp2040(block)

    def _take_samdx1(self, block: Block) -> None:
        if block.flags & FLAG_FAMILY_ID and block.word28 != self.family:
            return
        if (
            not block.flags & FLAG_NOT_MAIN_FLASH
            and block.payload_size == PAYLOAD
            and block.address % PAYLOAD == 0
            and self.app_start <= block.address < self.base + self.size
        ):
            self._write_row(block.address, block.data)
        if not block.num_blocks:
            return
        if self.num_blocks != block.num_blocks:
            too_many = block.num_blocks >= self.size // PAYLOAD + EXTRA_BLOCKS
            self.num_blocks = 0xFFFFFFFF if too_many or self.num_blocks else block.num_blocks
        if block.block_no < self.size // PAYLOAD + EXTRA_BLOCKS:
            self.seen.add(block.block_no)
            self.done = len(self.seen) >= self.num_blocks

    def _write_row(self, address: int, data: bytes) -> None:
        at = address - self.base
        if self.erase_size > PAYLOAD:
            # SAMD51: a row equal to flash is remembered, not written; the first changed
            # row of a block erases the block and puts the remembered rows back.
            unit = at - at % self.erase_size
            if self.flash[at : at + PAYLOAD] == data:
                self.row_same.add(at)
                return
            if unit not in self.erased:
                keep = {r: self.flash[r : r + PAYLOAD] for r in self.row_same if unit <= r}
                keep = {r: d for r, d in keep.items() if r < unit + self.erase_size}
                self.flash[unit : unit + self.erase_size] = b"\xff" * self.erase_size
                for row, content in keep.items():
                    self.flash[row : row + PAYLOAD] = content
                self.erased.add(unit)
        self.flash[at : at + PAYLOAD] = data
        self.flashed.append(address)

    def _take_rp2040(self, block: Block) -> None:
        if not (
            block.flags & FLAG_FAMILY_ID
            and block.word28 == self.family
            and not block.flags & FLAG_NOT_MAIN_FLASH
            and block.payload_size == PAYLOAD
        ):
            return
        in_flash = self.base <= block.address and block.address + PAYLOAD <= 0x20000000
        if not block.num_blocks or not in_flash or block.address % PAYLOAD:
            self.num_blocks = 0  # garbage: the transfer starts over
            return
        if block.num_blocks != self.num_blocks:
            self.start_session()
            self.num_blocks = block.num_blocks
        if block.block_no >= block.num_blocks or block.block_no in self.seen:
            return
        at = block.address - self.base
        if at + PAYLOAD <= self.size:
            unit = at - at % self.erase_size
            if unit not in self.erased:
                self.flash[unit : unit + self.erase_size] = b"\xff" * self.erase_size
                self.erased.add(unit)
            self.flash[at : at + PAYLOAD] = block.data
            self.flashed.append(block.address)
        self.seen.add(block.block_no)
        self.done = len(self.seen) == self.num_blocks


class MscBinChip:
    """Flash behind the STM32 MSC bootloader and what it does with each sector."""

    def __init__(self, app_start: int, flash_size: int, flash_base: int = 0x08000000) -> None:
        self.base = flash_base
        self.app_start = app_start
        self.size = flash_size
        self.flash = bytearray([0xFF]) * flash_size
        self.flash[: app_start - flash_base] = bytes([BOOTLOADER_BYTE]) * (app_start - flash_base)
        self.start_session()

    def start_session(self) -> None:
        self.started = False
        self.next = self.app_start
        self.done = False

    def read(self, address: int, length: int) -> bytes:
        return bytes(self.flash[address - self.base : address - self.base + length])

    def take(self, sector: bytes, lba: int | None = None) -> None:
        """``lba`` None for a file's data as a mounted drive's device receives it."""
        if self.done or (lba is not None and lba <= MSC_LAST_SYSTEM_LBA):
            return
        if not self.started and (sector[2] | sector[3] << 8) & 0x2FFE != 0x2000:
            return
        self.started = True
        at = self.next - self.base
        if at + SECTOR <= self.size:
            self.flash[at : at + SECTOR] = sector
        self.next += SECTOR

    def settle(self) -> None:
        """The writer stopped: 500 ms later the bootloader resets, if it started."""
        self.done = self.done or self.started


@dataclass(frozen=True)
class Board:
    """What a board's bootloader drive looks like."""

    label: str
    info: bytes | None  # INFO_UF2.TXT, None for the MSC bootloader
    total_sectors: int
    fat_sectors: int | None = None
    root_entries: int = 64
    sectors_per_cluster: int = 1
    partition_start: int = 0
    current_uf2: bool = False


BOARDS: dict[str, Board] = {
    # uf2-samdx1 boards/zero/board_config.h; ghost FAT: NUM_FAT_BLOCKS 16000, 63 FAT
    # sectors, 64 root entries (src/fat.c).
    "zero": Board(
        "ZEROBOOT",
        b"UF2 Bootloader v3.14.0 SFHWRO\r\nModel: Arduino Zero\r\nBoard-ID: SAMD21G18A-Zero-v0\r\n",
        15998,
        63,
        current_uf2=True,
    ),
    "metro_m4": Board(
        "METROM4BOOT",
        b"UF2 Bootloader v3.14.0 SFHWRO\r\nModel: Metro M4 Express\r\n"
        b"Board-ID: SAMD51J19A-Metro-v0\r\n",
        15998,
        63,
        current_uf2=True,
    ),
    # pico-bootrom bootrom/info_uf2.txt (LF endings); an MBR with the FAT16 partition at
    # LBA 1, 4 KiB clusters, 512 root entries (virtual_disk.c), smaller than the ROM's.
    "pico": Board(
        "RPI-RP2",
        b"UF2 Bootloader v3.0\nModel: Raspberry Pi RP2\nBoard-ID: RPI-RP2\n",
        65535,
        root_entries=512,
        sectors_per_cluster=8,
        partition_start=1,
    ),
    # Telekatz ghostfat.c: UF2_NUM_BLOCKS 8000, 32 FAT sectors, data from LBA 0x45.
    "bluepill": Board("BLUEPILL", None, 7998, 32),
    "stm32": Board("STM32", None, 7998, 32),
}


class SimDrive:
    """A bootloader drive on an image file (``image_path``) or in a directory standing
    for its mount point (``mount_dir``), with the chip behind it. Plugged in on creation:
    flashsh's volumes find it through the watcher hook."""

    def __init__(
        self,
        board: str,
        *,
        image_path: str | None = None,
        mount_dir: str | None = None,
        stuck: bool = False,
        flash_size: int | None = None,
    ) -> None:
        if (image_path is None) == (mount_dir is None):
            raise ValueError("give image_path or mount_dir")
        self.board = BOARDS[board]
        self.path = os.path.abspath(image_path or mount_dir or "")
        self.is_image = image_path is not None
        #: A device that takes nothing (a wrong family, a dead board): it never leaves.
        self.stuck = stuck
        self.chip: Uf2Chip | MscBinChip = _chip_for(board, flash_size)
        self.vanished = False
        #: Every sector the device received, in order: (LBA or None in a file, data).
        self.received: list[tuple[int | None, bytes]] = []
        self.device = "/dev/sdz9"
        self.replug()

    # ------------------------------------------------------------ the drive

    def replug(self) -> None:
        """The bootloader starts (again): a fresh drive, CURRENT.UF2 from today's flash."""
        self.chip.start_session()
        self.vanished = False
        files = self._files()
        self.names_at_plug = {name for name, _ in files}
        if self.is_image:
            with open(self.path, "wb") as image:
                image.truncate((self.board.partition_start + self.board.total_sectors) * SECTOR)
            with _ImageFile(self.path) as io:
                format_volume(
                    io,
                    self.board.total_sectors,
                    self.board.label,
                    sectors_per_cluster=self.board.sectors_per_cluster,
                    root_entries=self.board.root_entries,
                    fat_sectors=self.board.fat_sectors,
                    partition_start=self.board.partition_start,
                    files=files,
                )
        else:
            os.makedirs(self.path, exist_ok=True)
            for name, content in files:
                with open(os.path.join(self.path, name), "wb") as file:
                    file.write(content)
        watch(self.path, self)

    def unplug(self) -> None:
        unwatch(self.path)

    def scan(self) -> list[str]:
        """For an image written while no device watched it: feed the chip the files
        added since it was plugged in, their sectors in file order with their LBAs, as
        the device would have received them. Returns the files' names."""
        with _ImageFile(self.path) as io:
            volume = FatVolume(io, self.path)
            added = [e for e in volume.entries() if e.name not in self.names_at_plug]
            for entry in added:
                for lba in volume.sectors(entry):
                    self._take(io.read(lba), lba)
        return [e.name for e in added]

    def mounts(self) -> bytes:
        """A ``/proc/self/mounts`` text with this drive mounted (while it is there), the
        path escaped as the kernel does."""
        lines = [b"proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0"]
        if not self.vanished and not self.is_image:
            lines.append(
                b"%s %s vfat rw,nosuid,nodev,relatime,uid=1000,fmask=0022 0 0"
                % (self.device.encode(), escape_mount_path(self.path))
            )
        return b"\n".join(lines) + b"\n"

    def _files(self) -> list[tuple[str, bytes]]:
        files: list[tuple[str, bytes]] = []
        if self.board.info is not None:
            files.append(("INFO_UF2.TXT", self.board.info))
            files.append(("INDEX.HTM", b"<!doctype html>\n<html><body></body></html>\n"))
        if self.board.current_uf2 and isinstance(self.chip, Uf2Chip):
            files.append(("CURRENT.UF2", current_uf2(self.chip)))
        return files

    # ------------------------------------------------------------ watcher hook

    def sector_written(self, lba: int, data: bytes) -> None:
        self._take(data, lba)

    def file_synced(self, path: str) -> None:
        """The device receives the file's data: 512 bytes a sector, in file order."""
        with open(path, "rb") as file:
            content = file.read()
        for at in range(0, len(content), SECTOR):
            self._take(content[at : at + SECTOR].ljust(SECTOR, b"\0"), None)

    def _take(self, data: bytes, lba: int | None) -> None:
        self.received.append((lba, data))
        if self.stuck:
            return
        if isinstance(self.chip, MscBinChip):
            self.chip.take(data, lba)
        else:
            self.chip.take(data)
        self._maybe_reset()

    def gone(self) -> bool:
        if isinstance(self.chip, MscBinChip) and not self.stuck:
            self.chip.settle()
            self._maybe_reset()
        return self.vanished

    def _maybe_reset(self) -> None:
        if self.chip.done and not self.vanished:
            self.vanished = True
            if not self.is_image:
                shutil.rmtree(self.path)


def _chip_for(board: str, flash_size: int | None) -> Uf2Chip | MscBinChip:
    if board in ("bluepill", "stm32"):
        build = msc_builds()["bluepill" if board == "bluepill" else "generic"]
        return MscBinChip(build.app_start, flash_size or build.flash_size)
    family = {"zero": "samd21", "metro_m4": "samd51", "pico": "rp2040"}[board]
    drive = drive_family(family)
    size = flash_size or (0x200000 if family == "rp2040" else drive.flash_size)
    rules = "rp2040" if family == "rp2040" else "samdx1"
    return Uf2Chip(
        drive.family.id, drive.flash_base, size, drive.app_start, drive.erase_size, rules
    )


def current_uf2(chip: Uf2Chip) -> bytes:
    """CURRENT.UF2 as uf2-samdx1 serves it: the whole flash from its start, 256 bytes a
    block, family flag set, numBlocks the flash's block count (src/fat.c read_block)."""
    count = chip.size // PAYLOAD
    return b"".join(
        Block(
            FLAG_FAMILY_ID,
            chip.base + n * PAYLOAD,
            PAYLOAD,
            n,
            count,
            chip.family,
            chip.read(chip.base + n * PAYLOAD, PAYLOAD),
        ).pack()
        for n in range(count)
    )


def escape_mount_path(path: str) -> bytes:
    """A path as /proc/self/mounts shows it: space, tab, newline, backslash in octal."""
    out = bytearray()
    for byte in os.fsencode(path):
        out += b"\\%03o" % byte if byte in b" \t\n\\" else bytes([byte])
    return bytes(out)


class _ImageFile:
    """Sectors of an image file, for formatting it (unwatched: no chip sees this)."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR)

    def read(self, lba: int, count: int = 1) -> bytes:
        return os.pread(self.fd, count * SECTOR, lba * SECTOR).ljust(count * SECTOR, b"\0")

    def write(self, lba: int, data: bytes) -> None:
        os.pwrite(self.fd, data, lba * SECTOR)

    def __enter__(self) -> _ImageFile:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)
