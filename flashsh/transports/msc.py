"""Bootloader drives: what INFO_UF2.TXT says, which mounted drives are bootloaders, and
which drive a TARGET names.

A UF2 bootloader drive is known by its ``INFO_UF2.TXT`` (microsoft/uf2 README, "Files
exposed by bootloaders"); the STM32F103 MSC bootloader has no files at all and is known
by its volume label. A drive is reached either where the system mounted it (found in
``/proc/self/mounts``) or as a raw FAT volume: a block device such as ``/dev/sdb`` or an
image file, read and written through :mod:`flashsh.transports.fat16` (the volumes are
in :mod:`flashsh.transports.msc_volume`).

TARGET forms: ``msc`` (the only bootloader drive mounted), ``msc:LABEL``, ``msc:PATH``
(a mount point, a block device or an image file), or a mount point holding
``INFO_UF2.TXT`` given as it is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from flashsh.chips.uf2 import msc_labels
from flashsh.errors import TransportError
from flashsh.transports.msc_volume import (
    BY_LABEL,
    DriveVolume,
    MountedDrive,
    Mounts,
    RawDrive,
    mount_entry_for,
    parse_mounts,
    read_mounts,
    volume_label,
)

SCHEME = "msc"
INFO_FILE = "INFO_UF2.TXT"
FAT_TYPES = frozenset({"vfat", "msdos", "fat"})
#: USB id of the STM32 MSC bootloader (Telekatz usb_conf.c), to tell it from a USB stick
#: that happens to carry the same label.
MSC_BOOTLOADER_USB_ID = "1209:db42"


# ---------------------------------------------------------------- INFO_UF2.TXT


@dataclass(frozen=True)
class Uf2Info:
    """INFO_UF2.TXT: a banner ``UF2 Bootloader VERSION [LETTERS]`` and ``Key: value``
    lines (microsoft/uf2 README; uf2-samdx1 writes CRLF, the RP2040 ROM LF)."""

    banner: str
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def board_id(self) -> str:
        return self.fields.get("board-id", "")

    @property
    def model(self) -> str:
        return self.fields.get("model", "")

    @property
    def version(self) -> str:
        words = self.banner.split()
        return words[2] if len(words) > 2 and words[:2] == ["UF2", "Bootloader"] else ""

    @property
    def features(self) -> str:
        """uf2-samdx1's feature letters after the version (``SFHWRO``), if any."""
        words = self.banner.split()
        return words[3] if len(words) > 3 and words[:2] == ["UF2", "Bootloader"] else ""


def parse_info_uf2(data: bytes) -> Uf2Info:
    """Keys are matched in any case and kept lower case; lines without a colon after
    the banner are ignored."""
    lines = [line.strip() for line in data.decode("utf-8", "replace").splitlines()]
    lines = [line for line in lines if line]
    fields = {}
    for line in lines[1:]:
        key, colon, value = line.partition(":")
        if colon:
            fields[key.strip().lower()] = value.strip()
    return Uf2Info(lines[0] if lines else "", fields)


def read_info(volume: DriveVolume) -> Uf2Info | None:
    """INFO_UF2.TXT on ``volume`` parsed, or None when the drive has none."""
    name = info_name(volume.names())
    return parse_info_uf2(volume.read(name)) if name else None


def info_name(names: list[str]) -> str | None:
    """The name INFO_UF2.TXT has in ``names``, in whatever case the system shows it."""
    return next((n for n in names if n.upper() == INFO_FILE), None)


# ---------------------------------------------------------------- finding drives


@dataclass(frozen=True)
class FoundDrive:
    path: str  # mount point
    device: str
    label: str
    kind: str  # "uf2" or "msc" (the STM32 MSC bootloader)
    info: Uf2Info | None

    def describe(self) -> str:
        what = f"Board-ID {self.info.board_id}" if self.info else "STM32 MSC bootloader"
        return f"{self.path} ({self.label or 'no label'}, {what})"


def usb_id_of(device: str, sys_root: str = "/sys") -> str | None:
    """``vid:pid`` of the USB device a block device (``/dev/sdb1``) belongs to, from
    sysfs; None when it is not on USB or sysfs does not say."""
    name = os.path.basename(os.path.realpath(device))
    node = os.path.realpath(os.path.join(sys_root, "class", "block", name))
    while node.startswith(os.path.join(sys_root, "devices")):
        try:
            with (
                open(os.path.join(node, "idVendor")) as vid,
                open(os.path.join(node, "idProduct")) as pid,
            ):
                return f"{vid.read().strip()}:{pid.read().strip()}".lower()
        except OSError:
            node = os.path.dirname(node)
    return None


def find_drives(mounts: Mounts = read_mounts) -> list[FoundDrive]:
    """Mounted FAT volumes that are bootloader drives: those holding INFO_UF2.TXT, and
    empty ones labelled as an STM32 MSC bootloader build (and, where sysfs tells, on a
    device with its USB id)."""
    try:
        entries = parse_mounts(mounts())
    except OSError:
        return []
    found = []
    for entry in entries:
        if entry.fstype not in FAT_TYPES:
            continue
        try:
            names = os.listdir(entry.mount_point)
        except OSError:
            continue  # a stale mount of a drive that left
        label = volume_label(entry.device, entry.mount_point)
        info = info_name(names)
        if info:
            try:
                with open(os.path.join(entry.mount_point, info), "rb") as file:
                    parsed = parse_info_uf2(file.read())
            except OSError:
                continue
            found.append(FoundDrive(entry.mount_point, entry.device, label, "uf2", parsed))
        elif is_msc_bootloader(label, names, entry.device):
            found.append(FoundDrive(entry.mount_point, entry.device, label, "msc", None))
    return found


def is_msc_bootloader(label: str, names: list[str], device: str = "") -> bool:
    """An STM32 MSC bootloader drive: a known label, nothing in it but what a desktop
    may add, and no other USB id when sysfs knows the device."""
    if label.upper() not in msc_labels():
        return False
    if any(not n.startswith((".", "System Volume Information")) for n in names):
        return False
    usb_id = usb_id_of(device) if device.startswith("/dev/") else None
    return usb_id in (None, MSC_BOOTLOADER_USB_ID)


# ---------------------------------------------------------------- targets


def is_msc_target(target: str) -> bool:
    """``msc``, ``msc:...``, or a directory that is a bootloader drive."""
    if target == SCHEME or target.startswith(SCHEME + ":"):
        return True
    if not os.path.isdir(target):
        return False
    try:
        names = os.listdir(target)
    except OSError:
        return False
    if info_name(names):
        return True
    entry = mount_entry_for(target)
    return entry is not None and is_msc_bootloader(
        volume_label(entry.device, entry.mount_point), names, entry.device
    )


def open_volume(target: str, mounts: Mounts = read_mounts) -> DriveVolume:
    """The drive ``target`` names. Raises TransportError saying what was found when
    nothing or more than one drive matches."""
    if target == SCHEME:
        return _only_drive(find_drives(mounts), "no bootloader drive is mounted", mounts)
    if not target.startswith(SCHEME + ":"):
        return MountedDrive(target, mounts)
    rest = target[len(SCHEME) + 1 :]
    if not rest:
        raise TransportError("msc: needs a label or a path", "e.g. msc:RPI-RP2 or msc:/dev/sdb")
    if "/" not in rest:
        matching = [d for d in find_drives(mounts) if d.label.upper() == rest.upper()]
        if matching:
            return _only_drive(matching, "", mounts)
        by_label = os.path.join(BY_LABEL, rest)
        if os.path.exists(by_label):
            return RawDrive(os.path.realpath(by_label), mounts)
        if not os.path.exists(rest):
            raise TransportError(
                f"no bootloader drive labelled {rest} is mounted or plugged in",
                "double-tap reset to start the bootloader; `msc` alone takes the only "
                "drive there is",
            )
    if os.path.isdir(rest):
        return MountedDrive(rest, mounts)
    if not os.path.exists(rest):
        raise TransportError(f"{rest}: no such drive, device or image file")
    return RawDrive(rest, mounts)


def _only_drive(found: list[FoundDrive], none: str, mounts: Mounts) -> DriveVolume:
    if not found:
        raise TransportError(
            none,
            "double-tap reset to start the bootloader; with no automounter, mount it "
            "(udisksctl mount -b /dev/sdX) or give the device as msc:/dev/sdX",
        )
    if len(found) > 1:
        raise TransportError(
            f"{len(found)} bootloader drives are mounted: "
            + ", ".join(d.describe() for d in found),
            "name one: msc:LABEL or its mount point",
        )
    return MountedDrive(found[0].path, mounts)
