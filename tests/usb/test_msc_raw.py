"""Drives that are not mounted: an image file nothing watches (the simulated chip scans
it afterwards), and a real block device (a loop device over the image)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from flashsh import operations
from flashsh.images import load_image
from flashsh.protocols import ProbeOptions
from flashsh.session import Session
from flashsh.sims.uf2_drive import SimDrive
from flashsh.transports.msc_volume import unwatch, watch
from tests.usb.msc_helpers import arm_app, open_session


def test_an_image_file_with_no_device_is_written_without_waiting(tmp_path: Path) -> None:
    sim = SimDrive("bluepill", image_path=str(tmp_path / "drive.img"))
    sim.unplug()  # a plain image file: nothing will reset
    app = arm_app(0x08002000, 2500)
    (tmp_path / "klipper.bin").write_bytes(app)
    session = open_session(sim)
    result = operations.program(
        session, load_image(tmp_path / "klipper.bin", default_address=0x08002000)
    )
    assert result["notes"] == [f"wrote FIRMWARE.BIN to the image file {sim.path}"]
    session.close()
    # The file is whole on the image; the bootloader, reading its clusters in order,
    # would flash exactly the image.
    assert sim.scan() == ["FIRMWARE.BIN"]
    assert sim.chip.read(0x08002000, len(app)) == app


def test_a_uf2_written_to_an_image_is_found_by_its_magic(tmp_path: Path) -> None:
    sim = SimDrive("pico", image_path=str(tmp_path / "pico.img"))
    sim.unplug()
    data = bytes(range(256)) * 6
    (tmp_path / "app.bin").write_bytes(data)
    session = open_session(sim)
    operations.program(session, load_image(tmp_path / "app.bin", default_address=0x10000000))
    session.close()
    assert sim.scan() == ["NEW.UF2"]
    assert sim.chip.done and sim.chip.read(0x10000000, len(data)) == data


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[tuple[SimDrive, str]]:
    """A simulated drive's image behind a loop device (root and losetup needed)."""
    if os.geteuid() != 0 or shutil.which("losetup") is None:
        pytest.skip("needs root and losetup for a loop device")
    sim = SimDrive("zero", image_path=str(tmp_path / "zero.img"))
    made = subprocess.run(["losetup", "-f", "--show", sim.path], capture_output=True, text=True)
    if made.returncode != 0:
        sim.unplug()
        pytest.skip(f"no loop device here: {made.stderr.strip()}")
    device = made.stdout.strip()
    watch(device, sim)  # the chip sees what goes to the block device
    try:
        yield sim, device
    finally:
        unwatch(device)
        sim.unplug()
        subprocess.run(["losetup", "-d", device], check=False)


def test_a_block_device_is_written_through_its_fat(tmp_path: Path, loop_device) -> None:
    sim, device = loop_device
    app = arm_app(0x2000, 3000)
    (tmp_path / "app.bin").write_bytes(app)
    session = Session.open(f"msc:{device}", ProbeOptions())
    assert session.info.details["label"] == "ZEROBOOT"
    operations.program(session, load_image(tmp_path / "app.bin", default_address=0x2000))
    assert sim.chip.read(0x2000, len(app)) == app and sim.vanished
    session.close()
