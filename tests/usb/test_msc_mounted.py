"""Drives the system has mounted: a temporary directory stands for the mount point, a
fake mount table lists it, and the simulated chip reads the file when it is synced."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from flashsh import operations
from flashsh.errors import TransportError
from flashsh.images import load_image
from flashsh.protocols import ProbeOptions
from flashsh.protocols.msc_drive import MscDrive
from flashsh.session import Session
from flashsh.sims.uf2_drive import SimDrive
from flashsh.transports.msc_volume import MountedDrive
from tests.usb.msc_helpers import arm_app


@pytest.fixture
def pico(tmp_path: Path):
    sim = SimDrive("pico", mount_dir=str(tmp_path / "media" / "RPI RP2"))
    yield sim
    sim.unplug()


def app_file(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "app.bin"
    path.write_bytes(data)
    return path


def test_msc_finds_the_mounted_drive_and_the_copy_makes_it_leave(
    tmp_path: Path, pico: SimDrive
) -> None:
    drive = MscDrive.open_drive("msc", mounts=pico.mounts)
    session = Session(drive, "msc")
    assert session.info.details["label"] == "RPI RP2"  # the mount point's name
    data = bytes(range(256)) * 9
    operations.program(session, load_image(app_file(tmp_path, data), default_address=0x10000000))
    assert pico.chip.read(0x10000000, len(data)) == data
    assert not os.path.exists(pico.path) and pico.path.encode() not in pico.mounts()
    # The directory's own sync came after the device left: forgiven, the data was out.
    assert drive.last_write["file"] == "NEW.UF2" and "late_error" in drive.last_write
    session.close()


def test_a_mount_point_given_as_it_is(tmp_path: Path, pico: SimDrive) -> None:
    session = Session.open(pico.path, ProbeOptions())
    assert session.info.protocol == "uf2" and session.info.chip == "RP2040"
    data = bytes(range(256)) * 2
    operations.program(session, load_image(app_file(tmp_path, data), default_address=0x10000000))
    assert pico.chip.read(0x10000000, 512) == data
    session.close()


def test_the_stm32_msc_drive_by_label(tmp_path: Path) -> None:
    sim = SimDrive("bluepill", mount_dir=str(tmp_path / "BLUEPILL"))
    try:
        drive = MscDrive.open_drive("msc:BLUEPILL", mounts=sim.mounts)
        session = Session(drive, "msc:BLUEPILL")
        app = arm_app(0x08002000, 3000)
        operations.program(session, load_image(app_file(tmp_path, app), default_address=0x08002000))
        assert sim.chip.read(0x08002000, len(app)) == app
        assert sim.vanished and drive.last_write["file"] == "FIRMWARE.BIN"
        session.close()
    finally:
        sim.unplug()


def test_a_write_that_fails_while_the_drive_is_there_is_an_error(
    tmp_path: Path, pico: SimDrive, monkeypatch: pytest.MonkeyPatch
) -> None:
    drive = MscDrive.open_drive("msc", mounts=pico.mounts)

    def full(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("flashsh.transports.msc_volume.os.write", full)
    image = load_image(app_file(tmp_path, bytes(300)), default_address=0x10000000)
    with pytest.raises(TransportError) as err:
        operations.program(Session(drive, "msc"), image)
    assert err.value.message == (f"writing NEW.UF2 to {pico.path} failed: No space left on device")
    assert not pico.vanished and not pico.chip.flashed


def test_a_mount_left_behind_by_a_vanished_disk_counts_as_gone(tmp_path: Path) -> None:
    mount = tmp_path / "ZEROBOOT"
    mount.mkdir()
    (mount / "INFO_UF2.TXT").write_bytes(b"UF2 Bootloader v1\r\nBoard-ID: SAMD21G18A-Zero-v0\r\n")
    device = tmp_path / "sdc"
    device.write_bytes(b"")
    table = f"{device} {mount} vfat rw 0 0\n".encode()
    volume = MountedDrive(str(mount), lambda: table)
    assert not volume.gone()
    device.unlink()  # the kernel removed /dev/sdc; no automounter cleaned up the mount
    assert volume.gone()
    device.write_bytes(b"")
    volume = MountedDrive(str(mount), lambda: table)
    assert MountedDrive(str(mount), lambda: b"").was_mounted is False
    table = b""  # unmounted
    assert volume.gone()
