"""Finding bootloader drives: the mount table, INFO_UF2.TXT, labels, TARGET forms."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flashsh.errors import TransportError
from flashsh.sims.uf2_drive import escape_mount_path
from flashsh.transports.msc import (
    find_drives,
    is_msc_bootloader,
    is_msc_target,
    open_volume,
    parse_info_uf2,
    usb_id_of,
)
from flashsh.transports.msc_volume import (
    MountedDrive,
    RawDrive,
    parse_mounts,
    unescape_mount_field,
    volume_label,
)


def test_mount_fields_are_unescaped() -> None:
    text = (
        b"/dev/sdb1 /media/pi/My\\040Drive\\011x\\134y vfat rw,nosuid 0 0\n"
        b"proc /proc proc rw 0 0\n"
        b"short line\n"
    )
    entries = parse_mounts(text)
    assert [(e.device, e.mount_point, e.fstype) for e in entries] == [
        ("/dev/sdb1", "/media/pi/My Drive\tx\\y", "vfat"),
        ("proc", "/proc", "proc"),
    ]
    assert unescape_mount_field(b"a\\012b") == "a\nb"


def test_escaping_as_the_kernel_does_round_trips() -> None:
    path = "/media/pi/A B\\C"
    assert unescape_mount_field(escape_mount_path(path)) == path


@pytest.mark.parametrize("newline", [b"\r\n", b"\n"])
def test_info_uf2_with_either_line_ending(newline: bytes) -> None:
    text = newline.join(
        [
            b"UF2 Bootloader v3.14.0 SFHWRO",
            b"Model: Metro M4 Express",
            b"board-id:  SAMD51J19A-Metro-v0  ",
            b"a line without a colon",
            b"Date: Jun 16 2020",
            b"",
        ]
    )
    info = parse_info_uf2(text)
    assert info.board_id == "SAMD51J19A-Metro-v0"
    assert info.model == "Metro M4 Express"
    assert (info.version, info.features) == ("v3.14.0", "SFHWRO")
    assert info.fields["date"] == "Jun 16 2020"


def test_the_rp2040_banner_has_no_feature_letters() -> None:
    info = parse_info_uf2(b"UF2 Bootloader v3.0\nModel: Raspberry Pi RP2\nBoard-ID: RPI-RP2\n")
    assert (info.version, info.features, info.board_id) == ("v3.0", "", "RPI-RP2")


def mount_table(*mounts: tuple[str, Path, str]) -> bytes:
    lines = [
        b"%s %s %s rw,relatime 0 0" % (dev.encode(), escape_mount_path(str(path)), kind.encode())
        for dev, path, kind in mounts
    ]
    return b"\n".join(lines) + b"\n"


@pytest.fixture
def media(tmp_path: Path) -> dict[str, Path]:
    """Mount points as a desktop names them: a UF2 drive (lower-case info file, a space
    in the name), an empty BLUEPILL drive, a USB stick, and a non-FAT file system."""
    places = {
        "uf2": tmp_path / "RPI RP2",
        "msc": tmp_path / "BLUEPILL",
        "stick": tmp_path / "STICK",
        "ext4": tmp_path / "DATA",
    }
    for path in places.values():
        path.mkdir()
    (places["uf2"] / "info_uf2.txt").write_bytes(b"UF2 Bootloader v3.0\nBoard-ID: RPI-RP2\n")
    (places["stick"] / "holiday.jpg").write_bytes(b"\xff\xd8")
    (places["ext4"] / "INFO_UF2.TXT").write_bytes(b"UF2 Bootloader\nBoard-ID: X\n")
    return places


def table_for(media: dict[str, Path]) -> bytes:
    return mount_table(
        ("/dev/sdz1", media["uf2"], "vfat"),
        ("/dev/sdy", media["msc"], "vfat"),
        ("/dev/sdx1", media["stick"], "vfat"),
        ("/dev/sdw1", media["ext4"], "ext4"),
    )


def test_bootloader_drives_are_found_among_the_mounts(media: dict[str, Path]) -> None:
    found = find_drives(lambda: table_for(media))
    assert [(d.path, d.kind, d.label) for d in found] == [
        (str(media["uf2"]), "uf2", "RPI RP2"),
        (str(media["msc"]), "msc", "BLUEPILL"),
    ]
    assert found[0].info is not None and found[0].info.board_id == "RPI-RP2"


def test_msc_takes_the_only_drive_and_refuses_a_choice(media: dict[str, Path]) -> None:
    only_uf2 = mount_table(("/dev/sdz1", media["uf2"], "vfat"))
    volume = open_volume("msc", lambda: only_uf2)
    assert isinstance(volume, MountedDrive) and volume.path == str(media["uf2"])
    with pytest.raises(TransportError) as err:
        open_volume("msc", lambda: table_for(media))
    assert err.value.message.startswith("2 bootloader drives are mounted: ")
    assert err.value.hint == "name one: msc:LABEL or its mount point"
    with pytest.raises(TransportError, match="no bootloader drive is mounted"):
        open_volume("msc", lambda: b"")


def test_msc_label_picks_a_drive(media: dict[str, Path]) -> None:
    volume = open_volume("msc:bluepill", lambda: table_for(media))
    assert isinstance(volume, MountedDrive) and volume.path == str(media["msc"])
    with pytest.raises(TransportError, match="no bootloader drive labelled NOPE"):
        open_volume("msc:NOPE", lambda: table_for(media))


def test_a_path_after_msc_is_a_mount_point_or_a_raw_volume(tmp_path: Path) -> None:
    with pytest.raises(TransportError, match="no such drive, device or image file"):
        open_volume(f"msc:{tmp_path}/missing.img", lambda: b"")
    junk = tmp_path / "junk.img"
    junk.write_bytes(bytes(4096))
    with pytest.raises(TransportError, match="holds no FAT12/FAT16 volume"):
        open_volume(f"msc:{junk}", lambda: b"")
    assert isinstance(open_volume(f"msc:{tmp_path}", lambda: b""), MountedDrive)


def test_a_mounted_device_is_not_opened_raw() -> None:
    with pytest.raises(TransportError, match="is mounted"):
        RawDrive("/dev/null", lambda: b"/dev/null /media/x vfat rw 0 0\n")
    with pytest.raises(TransportError, match="/dev/sdq is mounted"):
        RawDrive("/dev/sdq", lambda: b"/dev/sdq1 /media/pi/RPI-RP2 vfat rw 0 0\n")


def test_targets_that_mean_a_drive(media: dict[str, Path], tmp_path: Path) -> None:
    assert is_msc_target("msc") and is_msc_target("msc:RPI-RP2")
    assert is_msc_target(str(media["uf2"]))  # a directory holding INFO_UF2.TXT
    assert not is_msc_target(str(media["stick"]))
    assert not is_msc_target("/dev/ttyACM0") and not is_msc_target("usb:0483:df11")


def test_the_msc_bootloader_is_an_empty_drive_with_its_label() -> None:
    assert is_msc_bootloader("BLUEPILL", [])
    assert is_msc_bootloader("stm32", [".Trash-1000", "System Volume Information"])
    assert not is_msc_bootloader("BLUEPILL", ["klipper.bin"])
    assert not is_msc_bootloader("KINGSTON", [])


def test_the_label_comes_from_udev_links_else_the_mount_point(tmp_path: Path) -> None:
    by_label = tmp_path / "by-label"
    by_label.mkdir()
    device = tmp_path / "sdb1"
    device.write_bytes(b"")
    os.symlink(device, by_label / "RPI\\x20RP2")  # another device's label
    assert volume_label("/dev/null", "/media/pi/ZEROBOOT", str(by_label)) == "ZEROBOOT"
    os.symlink("/dev/null", by_label / "METRO\\x20M4")  # udev escapes the space
    assert volume_label("/dev/null", "/media/pi/x", str(by_label)) == "METRO M4"


def test_the_usb_id_of_a_disk_comes_from_sysfs(tmp_path: Path) -> None:
    usb = tmp_path / "devices" / "pci0000:00" / "usb1" / "1-1"
    disk = usb / "1-1:1.0" / "host0" / "block" / "sdb"
    disk.mkdir(parents=True)
    (usb / "idVendor").write_text("1209\n")
    (usb / "idProduct").write_text("DB42\n")
    (tmp_path / "class" / "block").mkdir(parents=True)
    os.symlink(disk, tmp_path / "class" / "block" / "sdb")
    assert usb_id_of("/dev/sdb", str(tmp_path)) == "1209:db42"
    assert usb_id_of("/dev/sdq", str(tmp_path)) is None
