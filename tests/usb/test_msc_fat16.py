"""The FAT12/FAT16 code that reads and writes bootloader drives that are not mounted."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from flashsh.errors import TransportError
from flashsh.transports.fat16 import SECTOR, FatVolume, format_volume, read_layout, short_name


class Disk:
    """Sectors in memory, remembering the order of writes."""

    def __init__(self, sectors: int) -> None:
        self.data = bytearray(sectors * SECTOR)
        self.writes: list[int] = []

    def read(self, lba: int, count: int = 1) -> bytes:
        return bytes(self.data[lba * SECTOR : (lba + count) * SECTOR])

    def write(self, lba: int, data: bytes) -> None:
        assert len(data) % SECTOR == 0
        self.data[lba * SECTOR : lba * SECTOR + len(data)] = data
        self.writes += range(lba, lba + len(data) // SECTOR)


class ImageFile:
    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR)

    def read(self, lba: int, count: int = 1) -> bytes:
        return os.pread(self.fd, count * SECTOR, lba * SECTOR).ljust(count * SECTOR, b"\0")

    def write(self, lba: int, data: bytes) -> None:
        os.pwrite(self.fd, data, lba * SECTOR)


def ghost_msc(files: list[tuple[str, bytes]] = ()) -> tuple[Disk, FatVolume]:
    """The STM32 MSC bootloader's layout: 7998 sectors, 32 FAT sectors, data from 0x45."""
    disk = Disk(7998)
    return disk, format_volume(disk, 7998, "BLUEPILL", fat_sectors=32, files=files)


def test_the_ghost_layouts_are_reproduced() -> None:
    _, volume = ghost_msc()
    lay = volume.layout
    assert (lay.fat_start, lay.root_start, lay.data_start) == (1, 65, 0x45)
    assert lay.fat_bits == 16 and volume.label == "BLUEPILL"


def test_files_read_back_in_any_case_and_at_an_offset() -> None:
    content = bytes(i & 0xFF for i in range(5000))
    _, volume = ghost_msc([("INFO_UF2.TXT", b"UF2 Bootloader v1\r\n"), ("CURRENT.UF2", content)])
    assert [e.name for e in volume.entries()] == ["INFO_UF2.TXT", "CURRENT.UF2"]
    entry = volume.find("current.uf2")
    assert entry is not None and entry.size == 5000
    assert volume.read_file(entry) == content
    assert volume.read_file(entry, 1000, 700) == content[1000:1700]
    assert volume.read_file(entry, 4990, 100) == content[4990:]


def test_a_new_file_goes_data_first_in_order_then_fat_then_directory() -> None:
    disk, volume = ghost_msc()
    disk.writes.clear()
    data = os.urandom(3 * SECTOR + 100)
    volume.create_file("FIRMWARE.BIN", data)
    data_sectors = [0x45, 0x46, 0x47, 0x48]
    assert disk.writes[:4] == data_sectors  # contiguous, in file order, nothing else first
    assert all(lba <= 0x44 for lba in disk.writes[4:])  # FAT copies and the root directory
    assert disk.writes[-1] == 65  # the directory entry comes last
    again = FatVolume(disk, "disk")
    entry = again.find("firmware.bin")
    assert entry is not None and again.read_file(entry) == data


def test_a_taken_name_a_full_volume_and_a_bad_name_are_refused() -> None:
    disk, volume = ghost_msc([("A.BIN", b"x")])
    with pytest.raises(TransportError, match="a.bin already exists"):
        volume.create_file("a.bin", b"y")
    with pytest.raises(TransportError, match="is full: 8000 clusters needed, 7928 free"):
        volume.create_file("BIG.BIN", bytes(8000 * SECTOR))
    with pytest.raises(TransportError, match="not a FAT 8.3 file name"):
        short_name("firmware-update.bin")
    assert short_name("new.uf2") == b"NEW     UF2"


def test_a_volume_behind_an_mbr_is_found() -> None:
    disk = Disk(1 + 65535)
    format_volume(disk, 65535, "RPI-RP2", sectors_per_cluster=8, partition_start=1)
    lay = read_layout(disk, "disk")
    assert lay.base == 1 and lay.sectors_per_cluster == 8
    assert FatVolume(disk, "disk").label == "RPI-RP2"


def test_something_else_is_refused() -> None:
    with pytest.raises(TransportError, match="holds no FAT12/FAT16 volume"):
        read_layout(Disk(8), "/dev/sdz")


needs_dosfstools = pytest.mark.skipif(
    shutil.which("mkfs.fat") is None or shutil.which("fsck.fat") is None,
    reason="needs Debian's dosfstools (mkfs.fat, fsck.fat); .ci/run installs it",
)


@pytest.mark.debian
@needs_dosfstools
def test_fsck_accepts_what_flashsh_wrote(tmp_path: Path) -> None:
    path = tmp_path / "drive.img"
    with open(path, "wb") as file:
        file.truncate(15998 * SECTOR)
    io = ImageFile(path)
    volume = format_volume(io, 15998, "ZEROBOOT", fat_sectors=63, files=[("INFO_UF2.TXT", b"x")])
    volume.create_file("NEW.UF2", os.urandom(70000))
    check = subprocess.run(
        ["fsck.fat", "-n", "-v", "-l", str(path)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "Checking file /NEW.UF2" in check.stdout
    assert "/ZEROBOOT" in check.stdout


@pytest.mark.debian
@needs_dosfstools
@pytest.mark.parametrize("bits", [12, 16])
def test_volumes_made_by_mkfs_fat_read_and_take_a_file(tmp_path: Path, bits: int) -> None:
    path = tmp_path / "drive.img"
    size_kib = 1024 if bits == 12 else 16384
    subprocess.run(
        ["mkfs.fat", "-F", str(bits), "-n", "RPI-RP2", "-C", str(path), str(size_kib)],
        check=True,
        capture_output=True,
    )
    volume = FatVolume(ImageFile(path), str(path))
    assert volume.label == "RPI-RP2" and volume.layout.fat_bits == bits
    data = os.urandom(20000)
    volume.create_file("NEW.UF2", data)
    reread = FatVolume(ImageFile(path), str(path))
    entry = reread.find("NEW.UF2")
    assert entry is not None and reread.read_file(entry) == data
    check = subprocess.run(["fsck.fat", "-n", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
