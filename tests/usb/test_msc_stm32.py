"""The STM32F103 MSC bootloader: a raw .bin in one contiguous write, known by its label."""

from __future__ import annotations

from pathlib import Path

import pytest

from flashsh import operations
from flashsh.errors import ImageError, TargetError, UnsupportedError
from flashsh.images import load_image
from flashsh.sims.uf2_drive import BOOTLOADER_BYTE, MscBinChip
from tests.usb.msc_helpers import arm_app, drive, open_session


def bin_file(tmp_path: Path, data: bytes, name: str = "klipper.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_the_bin_is_flashed_from_the_app_start_in_order(tmp_path: Path) -> None:
    app = arm_app(0x08002000, 5000)
    with drive("bluepill", tmp_path) as sim:
        session = open_session(sim)
        assert session.info.bootloader == "STM32 MSC bootloader (bluepill build)"
        assert session.memory_map.app_start == 0x08002000
        image = load_image(bin_file(tmp_path, app), default_address=0x08002000)
        operations.program(session, image)
        assert isinstance(sim.chip, MscBinChip)
        assert sim.chip.read(0x08002000, len(app)) == app
        assert sim.chip.read(0x08000000, 0x2000) == bytes([BOOTLOADER_BYTE]) * 0x2000
        # Every data sector went out in order and contiguous, the file's first sector
        # first (the bootloader flashes them in arrival order, whatever their LBA).
        data_lbas = [lba for lba, _ in sim.received if lba is not None and lba > 0x44]
        assert data_lbas == list(range(0x45, 0x45 + 10))
        assert sim.vanished
        session.close()


def test_a_second_file_in_the_same_session_is_refused(tmp_path: Path) -> None:
    with drive("bluepill", tmp_path, stuck=True) as sim:
        session = open_session(sim)
        session.bootloader.vanish_timeout = 0
        image = load_image(bin_file(tmp_path, arm_app(0x08002000, 600)), default_address=0x08002000)
        with pytest.raises(TargetError, match="saw no sector that starts a vector table"):
            operations.program(session, image)
        with pytest.raises(TargetError) as err:
            operations.program(session, image)
        assert err.value.message == (
            "the STM32 MSC bootloader takes one file per session: a second one would be "
            "flashed behind the first"
        )
        session.close()


def test_a_file_that_does_not_start_with_a_stack_pointer_is_refused(tmp_path: Path) -> None:
    with drive("bluepill", tmp_path) as sim:
        session = open_session(sim)
        image = load_image(
            bin_file(tmp_path, b"\xff" * 64 + arm_app(0x08002000, 512)), default_address=0x08002000
        )
        for force in (False, True):
            with pytest.raises(ImageError, match="first word 0xffffffff"):
                operations.program(session, image, force=force)
        assert not sim.received
        session.close()


def test_an_image_built_without_the_bootloader_offset_is_refused(tmp_path: Path) -> None:
    with drive("bluepill", tmp_path) as sim:
        session = open_session(sim)
        image = load_image(bin_file(tmp_path, arm_app(0x08000000, 512)), default_address=0x08002000)
        with pytest.raises(ImageError) as err:
            operations.program(session, image)
        assert err.value.message == (
            f"{tmp_path}/klipper.bin is not linked for 0x08002000: its reset handler is at "
            "0x080001c0; it looks linked for 0x08000000 (no bootloader)"
        )
        session.close()


def test_a_bin_below_the_app_start_is_refused(tmp_path: Path) -> None:
    with drive("bluepill", tmp_path) as sim:
        session = open_session(sim)
        image = load_image(bin_file(tmp_path, arm_app(0x08000000, 512)), address=0x08000000)
        with pytest.raises(ImageError, match="inside the bootloader"):
            operations.program(session, image)
        session.close()


def test_the_stm32_label_means_16k_and_an_8k_build_gets_a_hint(tmp_path: Path) -> None:
    with drive("stm32", tmp_path) as sim:
        session = open_session(sim)
        assert session.memory_map.app_start == 0x08004000
        assert session.info.details["same_label"] == "maplemini (0x08002000)"
        maple = arm_app(0x08002000, 1024)
        image = load_image(bin_file(tmp_path, maple), default_address=0x08004000)
        with pytest.raises(ImageError) as err:
            operations.program(session, image)
        assert err.value.hint == "if the bootloader is that build, connect with --chip maplemini"
        session.close()
        maple_session = open_session(sim, chip="maplemini")
        assert maple_session.memory_map.app_start == 0x08002000
        maple_session.close()


def test_verify_is_refused_with_the_reason(tmp_path: Path) -> None:
    with drive("bluepill", tmp_path) as sim:
        session = open_session(sim)
        image = load_image(bin_file(tmp_path, arm_app(0x08002000, 600)), default_address=0x08002000)
        with pytest.raises(UnsupportedError) as err:
            operations.verify_image(session, image)
        assert str(err.value) == (
            "msc cannot read back, so it cannot verify (the STM32 MSC bootloader keeps no "
            "file on its drive and has no read command: it can only take a .bin and reboot)"
        )
        with pytest.raises(UnsupportedError, match="msc cannot read flash"):
            operations.read_memory(session, session.memory_map.flash, 0x08002000, 16)
        assert not sim.received
        session.close()
