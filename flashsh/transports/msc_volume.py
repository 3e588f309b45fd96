"""Bootloader drive volumes: a mounted drive used through file calls, or a raw FAT
volume (a block device, an image file) used sector by sector; writing one new file so
that it reaches the device, and noticing when the device goes away.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from flashsh.errors import TransportError
from flashsh.transports.fat16 import SECTOR, FatVolume

MOUNTS = "/proc/self/mounts"
BY_LABEL = "/dev/disk/by-label"
#: Errors that mean the device under a path or a file descriptor is no longer there.
GONE_ERRNOS = frozenset({errno.EIO, errno.ENODEV, errno.ENXIO, errno.ENOENT, errno.ESHUTDOWN})

Mounts = Callable[[], bytes]


# ---------------------------------------------------------------- mount table


def read_mounts() -> bytes:
    with open(MOUNTS, "rb") as table:
        return table.read()


@dataclass(frozen=True)
class MountEntry:
    device: str
    mount_point: str
    fstype: str
    options: str


def unescape_mount_field(raw: bytes) -> str:
    """Undo the kernel's octal escapes (``\\040`` space, ``\\011`` tab, ``\\012``
    newline, ``\\134`` backslash; linux fs/proc_namespace.c) and decode as a path."""
    return os.fsdecode(re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]), raw))


def parse_mounts(text: bytes | str) -> list[MountEntry]:
    """Entries of a ``/proc/self/mounts`` text, fields unescaped; short lines skipped."""
    raw = os.fsencode(text) if isinstance(text, str) else text
    entries = []
    for line in raw.splitlines():
        fields = line.split()
        if len(fields) >= 4:
            device, point, fstype, options = (unescape_mount_field(f) for f in fields[:4])
            entries.append(MountEntry(device, point, fstype, options))
    return entries


def mount_entry_for(path: str, mounts: Mounts = read_mounts) -> MountEntry | None:
    """The mount table entry whose mount point is ``path`` (the last, if stacked)."""
    try:
        entries = parse_mounts(mounts())
    except OSError:
        return None
    wanted = os.path.realpath(path)
    found = [e for e in entries if os.path.realpath(e.mount_point) == wanted]
    return found[-1] if found else None


def volume_label(device: str, mount_point: str, by_label: str = BY_LABEL) -> str:
    """The file system label of ``device``: the udev ``by-label`` link that points to it
    (``\\xNN`` escapes undone), else the mount point's name, which is what desktop
    automounters use (``/media/USER/RPI-RP2``)."""
    if device.startswith("/dev/"):
        target = os.path.realpath(device)
        try:
            for name in os.listdir(by_label):
                if os.path.realpath(os.path.join(by_label, name)) == target:
                    return re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m[1], 16)), name)
        except OSError:
            pass
    return os.path.basename(mount_point.rstrip("/"))


# ---------------------------------------------------------------- test hook


class DriveWatcher(Protocol):
    """Stands in for the device behind a drive (flashsh.sims.uf2_drive): sees what is
    written and says when the device has left."""

    #: The device has left: writes to it fail from now on.
    vanished: bool

    def sector_written(self, lba: int, data: bytes) -> None:
        """A raw drive's sector reached the device."""

    def file_synced(self, path: str) -> None:
        """A mounted drive's new file was synced: its data reached the device."""

    def gone(self) -> bool:
        """Asked while the host waits after a write (time passes for the device)."""


#: Watchers by the real path of an image file or a directory standing for a drive.
WATCHERS: dict[str, DriveWatcher] = {}


def watch(path: str, watcher: DriveWatcher) -> None:
    WATCHERS[os.path.realpath(path)] = watcher


def unwatch(path: str) -> None:
    WATCHERS.pop(os.path.realpath(path), None)


# ---------------------------------------------------------------- volumes


class WriteFailed(Exception):
    """Writing the new file failed; ``data_written`` when every data byte had been handed
    to the system (or the device) before the error: a drive that resets after the last
    block makes the writes after it fail."""

    def __init__(self, error: OSError, data_written: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.data_written = data_written


class DriveVolume(ABC):
    """One bootloader drive's root directory. It is the session's link."""

    description: str = ""
    label: str = ""
    #: False for an image file no simulated device watches: nothing will reset.
    has_device: bool = True

    @abstractmethod
    def names(self) -> list[str]: ...

    @abstractmethod
    def size(self, name: str) -> int: ...

    @abstractmethod
    def read(self, name: str, offset: int = 0, length: int | None = None) -> bytes: ...

    @abstractmethod
    def write_new(self, name: str, data: bytes) -> None:
        """Create ``name`` holding ``data`` in one pass and make sure it reached the
        device. Raises WriteFailed."""

    @abstractmethod
    def gone(self) -> bool:
        """Whether the device has left (the board reset into its application)."""

    def close(self) -> None:
        return None

    def free_name(self, stem: str, extension: str) -> str:
        """``NEW.UF2``, or ``NEW1.UF2`` ... when taken (names compared in any case)."""
        taken = {n.upper() for n in self.names()}
        for number in range(1000):
            name = f"{stem}{number or ''}.{extension}"
            if name.upper() not in taken:
                return name
        raise TransportError(f"no free file name on {self.description}")


class MountedDrive(DriveVolume):
    """A drive the system has mounted, used through ordinary file calls."""

    def __init__(self, path: str, mounts: Mounts = read_mounts) -> None:
        self.path = os.path.abspath(path)
        self.description = self.path
        self._mounts = mounts
        entry = mount_entry_for(self.path, mounts)
        self.device = entry.device if entry else ""
        self.was_mounted = entry is not None
        self._device_existed = bool(self.device) and os.path.exists(self.device)
        self.label = volume_label(self.device, self.path)
        self.watcher = WATCHERS.get(os.path.realpath(self.path))

    def names(self) -> list[str]:
        try:
            return sorted(os.listdir(self.path))
        except OSError as err:
            raise _gone_error(self.description, err) from None

    def _actual(self, name: str) -> str:
        found = next((n for n in self.names() if n.upper() == name.upper()), name)
        return os.path.join(self.path, found)

    def size(self, name: str) -> int:
        return os.path.getsize(self._actual(name))

    def read(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        try:
            with open(self._actual(name), "rb") as file:
                file.seek(offset)
                return file.read(-1 if length is None else length)
        except OSError as err:
            raise _gone_error(f"{name} on {self.description}", err) from None

    def write_new(self, name: str, data: bytes) -> None:
        path = os.path.join(self.path, name)
        written = False
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                written = True
                os.fsync(fd)  # the data leaves the page cache for the device now
                if self.watcher is not None:
                    self.watcher.file_synced(path)
            finally:
                os.close(fd)
            _sync_directory(self.path)
        except OSError as err:
            raise WriteFailed(err, written) from err

    def gone(self) -> bool:
        if self.watcher is not None and self.watcher.gone():
            return True
        if not os.path.isdir(self.path):
            return True
        if self._device_existed and not os.path.exists(self.device):
            return True  # the kernel removed the disk; the mount may linger
        if self.was_mounted and mount_entry_for(self.path, self._mounts) is None:
            return True
        try:
            os.listdir(self.path)
        except OSError as err:
            return err.errno in GONE_ERRNOS
        return False


class SectorDevice:
    """512-byte sectors of a block device or an image file."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except PermissionError:
            raise TransportError(
                f"cannot open {path}: permission denied",
                "run as root, or mount the drive (udisksctl mount -b DEVICE) and give "
                "its mount point",
            ) from None
        except OSError as err:
            raise TransportError(f"cannot open {path}: {err.strerror or err}") from None
        self.is_block_device = _is_block_device(self.fd)
        self.watcher = WATCHERS.get(os.path.realpath(path))

    def read(self, lba: int, count: int = 1) -> bytes:
        want = count * SECTOR
        data = os.pread(self.fd, want, lba * SECTOR)
        if len(data) < want and self.is_block_device:
            raise OSError(errno.EIO, f"short read at sector {lba}")
        return data.ljust(want, b"\0")  # an image file may be sparse at its end

    def write(self, lba: int, data: bytes) -> None:
        if self.watcher is not None and self.watcher.vanished:
            raise OSError(errno.EIO, os.strerror(errno.EIO))  # the device has left
        os.pwrite(self.fd, data, lba * SECTOR)
        if self.watcher is not None:
            for at in range(0, len(data), SECTOR):
                self.watcher.sector_written(lba + at // SECTOR, data[at : at + SECTOR])

    def sync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


class RawDrive(DriveVolume):
    """A drive that is not mounted: its FAT volume read and written sector by sector."""

    def __init__(self, path: str, mounts: Mounts = read_mounts) -> None:
        self.path = path
        self.description = path
        if _is_mounted_device(path, mounts):
            raise TransportError(
                f"{path} is mounted", "give its mount point instead (writing under a mounted "
                "file system would corrupt it)",
            )  # fmt: skip
        self.device = SectorDevice(path)
        try:
            self.fat = FatVolume(self.device, path)
        except BaseException:
            self.device.close()
            raise
        self.label = self.fat.label
        self.has_device = self.device.is_block_device or self.device.watcher is not None

    def names(self) -> list[str]:
        return [e.name for e in self.fat.entries()]

    def size(self, name: str) -> int:
        entry = self.fat.find(name)
        return entry.size if entry else 0

    def read(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        entry = self.fat.find(name)
        if entry is None:
            raise TransportError(f"{self.description} has no {name}")
        try:
            return self.fat.read_file(entry, offset, length)
        except OSError as err:
            raise _gone_error(f"{name} on {self.description}", err) from None

    def write_new(self, name: str, data: bytes) -> None:
        written = False
        try:
            pending = self.fat.write_data(name, data)
            written = True
            self.fat.commit(pending)
            self.device.sync()
        except OSError as err:
            raise WriteFailed(err, written) from err

    def gone(self) -> bool:
        if self.device.watcher is not None:
            return self.device.watcher.gone()
        if self.device.is_block_device:
            return not os.path.exists(self.path)
        return False

    def close(self) -> None:
        self.device.close()


def _is_block_device(fd: int) -> bool:
    return stat.S_ISBLK(os.fstat(fd).st_mode)


def _is_mounted_device(path: str, mounts: Mounts) -> bool:
    """Whether ``path`` or a partition on it (``/dev/sdb1`` of ``/dev/sdb``) is mounted."""
    if not path.startswith("/dev/"):
        return False
    try:
        entries = parse_mounts(mounts())
    except OSError:
        return False
    real = os.path.realpath(path)
    for entry in entries:
        if entry.device.startswith("/"):
            mounted = os.path.realpath(entry.device)
            if mounted == real or re.fullmatch(re.escape(real) + r"p?\d+", mounted):
                return True
    return False


def _sync_directory(path: str) -> None:
    """fsync the directory so the new entry reaches the device too (a file system that
    cannot sync directories says EINVAL, which is no failure)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def _gone_error(what: str, err: OSError) -> TransportError:
    if err.errno in GONE_ERRNOS:
        return TransportError(
            f"cannot read {what}: {err.strerror} (the drive has left)",
            "double-tap reset to bring the bootloader drive back",
        )
    return TransportError(f"cannot read {what}: {err.strerror or err}")
