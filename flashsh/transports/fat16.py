"""Just enough FAT12/FAT16 to talk to a bootloader drive that is not mounted: read the
root directory and its files, add one new file, and format a volume for tests.

Bootloader drives are tiny "ghost" FAT16 volumes (uf2-samdx1 src/fat.c, the RP2040 boot
ROM's bootrom/virtual_disk.c, Telekatz ghostfat.c): 512-byte sectors, one root directory,
no subdirectories that matter. A new file's data goes out first, cluster after cluster
in file order and in one pass, then the FAT and the directory entry: a UF2 bootloader
that resets after the last block may refuse those late writes, and the STM32 MSC
bootloader flashes data sectors in the order they arrive.

FAT32, long file names and subdirectories are left out on purpose (see
docs/protocols/uf2-msc.md for why this is not pyfatfs).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from flashsh.errors import TransportError

SECTOR = 512
ENTRY = 32
ATTR_VOLUME_LABEL = 0x08
ATTR_DIRECTORY = 0x10
ATTR_ARCHIVE = 0x20
ATTR_LONG_NAME = 0x0F
#: MBR partition types that hold FAT12/FAT16 (the RP2040 ROM uses 0x0E).
FAT_PARTITION_TYPES = frozenset({0x01, 0x04, 0x06, 0x0E})


class SectorIO(Protocol):
    """Sectors of a disk, numbered from 0."""

    def read(self, lba: int, count: int = 1) -> bytes: ...

    def write(self, lba: int, data: bytes) -> None: ...


@dataclass(frozen=True)
class DirEntry:
    name: str  # "INFO_UF2.TXT"
    attr: int
    cluster: int
    size: int
    slot: int  # index in the root directory


@dataclass(frozen=True)
class PendingFile:
    """A file whose data is written but which no directory entry names yet."""

    short: bytes
    slot: int
    clusters: tuple[int, ...]
    size: int


@dataclass(frozen=True)
class Layout:
    """Where things are, in sectors from the disk's start."""

    base: int  # the boot sector (1 behind an MBR)
    sectors_per_cluster: int
    fat_start: int
    fat_sectors: int
    fats: int
    root_start: int
    root_entries: int
    data_start: int
    clusters: int  # data clusters, numbered from 2
    bpb_label: str

    @property
    def fat_bits(self) -> int:
        # Microsoft's FAT specification: the cluster count alone decides the type.
        return 12 if self.clusters < 4085 else 16

    def cluster_lba(self, cluster: int) -> int:
        return self.data_start + (cluster - 2) * self.sectors_per_cluster


class FatVolume:
    """The root directory of a FAT12/FAT16 volume on ``io`` (after an MBR if it has one)."""

    def __init__(self, io: SectorIO, description: str) -> None:
        self.io = io
        self.description = description
        self.layout = read_layout(io, description)
        lay = self.layout
        self._fat = bytearray(io.read(lay.fat_start, lay.fat_sectors))
        root_sectors = -(-lay.root_entries * ENTRY // SECTOR)
        self._root = bytearray(io.read(lay.root_start, root_sectors))

    # ------------------------------------------------------------ reading

    @property
    def label(self) -> str:
        """The volume label: the root directory's label entry, as Linux shows it, else
        the boot sector's."""
        for slot in range(self.layout.root_entries):
            raw = self._root[slot * ENTRY : (slot + 1) * ENTRY]
            if raw[0] == 0:
                break
            if raw[0] != 0xE5 and raw[11] & 0x3F == ATTR_VOLUME_LABEL:
                return raw[:11].decode("latin-1").rstrip()
        return self.layout.bpb_label

    def entries(self) -> list[DirEntry]:
        """Files in the root directory (no labels, long-name pieces or deleted ones)."""
        found = []
        for slot in range(self.layout.root_entries):
            raw = bytes(self._root[slot * ENTRY : (slot + 1) * ENTRY])
            if raw[0] == 0:
                break
            attr = raw[11]
            if raw[0] == 0xE5 or attr == ATTR_LONG_NAME or attr & ATTR_VOLUME_LABEL:
                continue
            base = raw[:8].decode("latin-1").rstrip()
            ext = raw[8:11].decode("latin-1").rstrip()
            if base[:1] == "\x05":  # a name starting with 0xE5 is stored as 0x05
                base = "\xe5" + base[1:]
            cluster = struct.unpack_from("<H", raw, 26)[0]
            size = struct.unpack_from("<I", raw, 28)[0]
            found.append(DirEntry(f"{base}.{ext}" if ext else base, attr, cluster, size, slot))
        return found

    def find(self, name: str) -> DirEntry | None:
        """A root directory entry by name, in any case (FAT names are case-blind)."""
        wanted = name.upper()
        return next((e for e in self.entries() if e.name.upper() == wanted), None)

    def read_file(self, entry: DirEntry, offset: int = 0, length: int | None = None) -> bytes:
        """``length`` bytes (to the end by default) of a file from ``offset``."""
        end = entry.size if length is None else min(entry.size, offset + length)
        if offset >= end:
            return b""
        cluster_bytes = self.layout.sectors_per_cluster * SECTOR
        chain = self._chain(entry.cluster, entry.size)
        out = bytearray()
        first = offset // cluster_bytes
        for index in range(first, -(-end // cluster_bytes)):
            out += self.io.read(
                self.layout.cluster_lba(chain[index]), self.layout.sectors_per_cluster
            )
        skip = offset - first * cluster_bytes
        return bytes(out[skip : skip + end - offset])

    def sectors(self, entry: DirEntry) -> list[int]:
        """The sectors holding a file's data, in file order."""
        spc = self.layout.sectors_per_cluster
        lbas = [
            self.layout.cluster_lba(cluster) + n
            for cluster in self._chain(entry.cluster, entry.size)
            for n in range(spc)
        ]
        return lbas[: -(-entry.size // SECTOR)]

    # ------------------------------------------------------------ writing

    def create_file(self, name: str, data: bytes) -> DirEntry:
        """Write a new file in the root directory: its data first, in file order, then
        the FAT copies, then the directory entry. Raises TransportError when the name is
        taken or the volume is full, OSError when a write fails."""
        return self.commit(self.write_data(name, data))

    def write_data(self, name: str, data: bytes) -> PendingFile:
        """Allocate clusters for a new file and write its data, cluster after cluster in
        file order, sectors past the end of the data left alone. Nothing points to it
        until ``commit``."""
        short = short_name(name)
        if self.find(name) is not None:
            raise TransportError(f"{name} already exists on {self.description}")
        slot = self._free_slot()
        lay = self.layout
        cluster_bytes = lay.sectors_per_cluster * SECTOR
        clusters = self._free_clusters(-(-len(data) // cluster_bytes))
        for index, cluster in enumerate(clusters):
            piece = data[index * cluster_bytes : (index + 1) * cluster_bytes]
            sectors = -(-len(piece) // SECTOR)
            self.io.write(lay.cluster_lba(cluster), piece.ljust(sectors * SECTOR, b"\0"))
        return PendingFile(short, slot, tuple(clusters), len(data))

    def commit(self, pending: PendingFile) -> DirEntry:
        """Chain the file's clusters in every FAT copy, then write its directory entry."""
        lay = self.layout
        clusters = pending.clusters
        changed: set[int] = set()
        for index, cluster in enumerate(clusters):
            after = clusters[index + 1] if index + 1 < len(clusters) else self._end_of_chain()
            changed |= self._set_fat(cluster, after)
        for sector in sorted(changed):
            piece = bytes(self._fat[sector * SECTOR : (sector + 1) * SECTOR])
            for copy in range(lay.fats):
                self.io.write(lay.fat_start + copy * lay.fat_sectors + sector, piece)
        first = clusters[0] if clusters else 0
        slot = pending.slot
        self._root[slot * ENTRY : (slot + 1) * ENTRY] = _dir_entry(
            pending.short, ATTR_ARCHIVE, first, pending.size
        )
        sector = slot * ENTRY // SECTOR
        self.io.write(
            lay.root_start + sector, bytes(self._root[sector * SECTOR : (sector + 1) * SECTOR])
        )
        return DirEntry(_display(pending.short), ATTR_ARCHIVE, first, pending.size, slot)

    # ------------------------------------------------------------ internals

    def _end_of_chain(self) -> int:
        return 0xFFF if self.layout.fat_bits == 12 else 0xFFFF

    def _get_fat(self, cluster: int) -> int:
        if self.layout.fat_bits == 16:
            return struct.unpack_from("<H", self._fat, cluster * 2)[0]
        pair = struct.unpack_from("<H", self._fat, cluster * 3 // 2)[0]
        return pair >> 4 if cluster & 1 else pair & 0xFFF

    def _set_fat(self, cluster: int, value: int) -> set[int]:
        """Change one FAT entry in memory; return the FAT sectors it touched."""
        if self.layout.fat_bits == 16:
            at = cluster * 2
            struct.pack_into("<H", self._fat, at, value)
            return {at // SECTOR}
        at = cluster * 3 // 2
        pair = struct.unpack_from("<H", self._fat, at)[0]
        # An odd cluster owns the high 12 bits of its byte pair, an even one the low 12.
        pair = (pair & 0x000F) | (value << 4) if cluster & 1 else (pair & 0xF000) | value
        struct.pack_into("<H", self._fat, at, pair)
        return {at // SECTOR, (at + 1) // SECTOR}

    def _chain(self, first: int, size: int) -> list[int]:
        cluster_bytes = self.layout.sectors_per_cluster * SECTOR
        need = -(-size // cluster_bytes)
        chain = []
        cluster = first
        while len(chain) < need:
            if not 2 <= cluster < self.layout.clusters + 2:
                raise TransportError(
                    f"{self.description}: a file's cluster chain is broken at cluster {cluster}",
                    "the drive's file system is damaged; reset the board into its bootloader",
                )
            chain.append(cluster)
            cluster = self._get_fat(cluster)
        return chain

    def _free_clusters(self, count: int) -> list[int]:
        free = []
        for cluster in range(2, self.layout.clusters + 2):
            if self._get_fat(cluster) == 0:
                free.append(cluster)
                if len(free) == count:
                    return free
        if count == 0:
            return []
        raise TransportError(
            f"{self.description} is full: {count} clusters needed, {len(free)} free",
            "the image is larger than the drive; check that it is the right file",
        )

    def _free_slot(self) -> int:
        for slot in range(self.layout.root_entries):
            if self._root[slot * ENTRY] in (0x00, 0xE5):
                return slot
        raise TransportError(f"the root directory of {self.description} is full")


def read_layout(io: SectorIO, description: str) -> Layout:
    """Find the FAT boot sector (at sector 0, or where an MBR's first partition starts)
    and read its geometry. Raises TransportError for anything else."""
    boot = io.read(0)
    base = 0
    if not _is_boot_sector(boot):
        entry = boot[446:462]
        if boot[510:512] == b"\x55\xaa" and entry[4] in FAT_PARTITION_TYPES:
            base = struct.unpack_from("<I", entry, 8)[0]
            boot = io.read(base)
        if not _is_boot_sector(boot):
            raise TransportError(
                f"{description} holds no FAT12/FAT16 volume",
                "give the bootloader's drive (a FAT volume) or its mount point",
            )
    (bytes_per_sector, spc, reserved, fats, root_entries, total16, _media, fat16_size) = (
        struct.unpack_from("<HBHBHHBH", boot, 11)
    )
    total = total16 or struct.unpack_from("<I", boot, 32)[0]
    if fat16_size == 0:
        raise TransportError(
            f"{description} is FAT32; flashsh writes FAT12/FAT16 drives only",
            "mount it and give the mount point",
        )
    root_sectors = -(-root_entries * ENTRY // SECTOR)
    fat_start = base + reserved
    root_start = fat_start + fats * fat16_size
    data_start = root_start + root_sectors
    clusters = (base + total - data_start) // spc
    if clusters >= 65525:
        raise TransportError(f"{description} has too many clusters for FAT16")
    label = boot[43:54].decode("latin-1").rstrip() if boot[38] == 0x29 else ""
    del bytes_per_sector  # checked by _is_boot_sector
    return Layout(
        base, spc, fat_start, fat16_size, fats, root_start, root_entries, data_start, clusters,
        label,
    )  # fmt: skip


def _is_boot_sector(boot: bytes) -> bool:
    if len(boot) < SECTOR or boot[510:512] != b"\x55\xaa":
        return False
    bytes_per_sector, spc, reserved, fats = struct.unpack_from("<HBHB", boot, 11)
    return (
        bytes_per_sector == SECTOR
        and spc in (1, 2, 4, 8, 16, 32, 64, 128)
        and reserved >= 1
        and fats in (1, 2)
    )


def short_name(name: str) -> bytes:
    """The 11-byte 8.3 directory name of ``name`` (``NEW.UF2`` -> ``NEW     UF2``).
    Raises TransportError for names that do not fit 8.3."""
    base, _, ext = name.upper().partition(".")
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-~!#$%&'()@^`{}")
    if not base or len(base) > 8 or len(ext) > 3 or not set(base + ext) <= allowed:
        raise TransportError(f"{name!r} is not a FAT 8.3 file name")
    return (base.ljust(8) + ext.ljust(3)).encode("ascii")


def _display(short: bytes) -> str:
    base, ext = short[:8].decode().rstrip(), short[8:].decode().rstrip()
    return f"{base}.{ext}" if ext else base


def _dos_time(when: float | None = None) -> tuple[int, int]:
    t = time.localtime(when)
    year = max(t.tm_year, 1980)
    return (t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2), (
        ((year - 1980) << 9) | (t.tm_mon << 5) | t.tm_mday
    )


def _dir_entry(short: bytes, attr: int, cluster: int, size: int) -> bytes:
    clock, date = _dos_time()
    return short + struct.pack(
        "<BBBHHHHHHHI", attr, 0, 0, clock, date, date, 0, clock, date, cluster, size
    )


# ---------------------------------------------------------------- formatting


def format_volume(
    io: SectorIO,
    total_sectors: int,
    label: str,
    *,
    sectors_per_cluster: int = 1,
    root_entries: int = 64,
    fat_sectors: int | None = None,
    partition_start: int = 0,
    files: Iterable[tuple[str, bytes]] = (),
) -> FatVolume:
    """Write an empty FAT16 volume of ``total_sectors`` (after an MBR when
    ``partition_start`` > 0, as the RP2040 ROM shows it), with a volume label entry and
    ``files`` in the root directory; return it opened. The defaults give the layout of
    the bootloaders' ghost file systems: one reserved sector, two FATs, a 64-entry root
    directory, one sector per cluster."""
    reserved, fats = 1, 2
    if total_sectors // sectors_per_cluster < 4200:
        raise ValueError("a FAT16 volume needs at least 4085 clusters; give more sectors")
    root_sectors = -(-root_entries * ENTRY // SECTOR)
    if fat_sectors is None:
        fat_sectors = 1
        while True:
            data = total_sectors - reserved - fats * fat_sectors - root_sectors
            need = -(-(data // sectors_per_cluster + 2) * 2 // SECTOR)
            if need <= fat_sectors:
                break
            fat_sectors = need
    padded = label.upper()[:11].ljust(11).encode("ascii")
    if partition_start:
        mbr = bytearray(SECTOR)
        mbr[446 + 4] = 0x0E  # FAT16 LBA
        struct.pack_into("<II", mbr, 446 + 8, partition_start, total_sectors)
        mbr[510:512] = b"\x55\xaa"
        io.write(0, bytes(mbr))
    boot = bytearray(SECTOR)
    boot[0:3] = b"\xeb\x3c\x90"
    boot[3:11] = b"FLASHSH "
    struct.pack_into(
        "<HBHBHHBHHHII", boot, 11, SECTOR, sectors_per_cluster, reserved, fats, root_entries,
        total_sectors if total_sectors < 0x10000 else 0, 0xF8, fat_sectors, 1, 1,
        partition_start, total_sectors if total_sectors >= 0x10000 else 0,
    )  # fmt: skip
    boot[36] = 0x80
    boot[38] = 0x29
    struct.pack_into("<I", boot, 39, 0x00420042)
    boot[43:54] = padded
    boot[54:62] = b"FAT16   "
    boot[510:512] = b"\x55\xaa"
    io.write(partition_start, bytes(boot))
    fat = bytearray(fat_sectors * SECTOR)
    fat[0:4] = b"\xf8\xff\xff\xff"
    for copy in range(fats):
        io.write(partition_start + reserved + copy * fat_sectors, bytes(fat))
    root = bytearray(root_sectors * SECTOR)
    root[0:32] = padded + bytes([ATTR_VOLUME_LABEL]) + bytes(20)
    io.write(partition_start + reserved + fats * fat_sectors, bytes(root))
    volume = FatVolume(io, "new volume")
    for name, content in files:
        volume.create_file(name, content)
    return volume
