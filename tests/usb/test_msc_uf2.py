"""UF2 drives (uf2-samdx1, the RP2040 boot ROM) programmed through a FAT image file,
with the simulated chip taking the sectors as the real bootloader does."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from flashsh import operations
from flashsh.errors import ImageError, TargetError, UnsupportedError, VerifyError
from flashsh.images import load_image
from flashsh.images.ihex import encode_hex
from flashsh.images.uf2 import image_to_uf2
from flashsh.protocols import ProbeOptions
from flashsh.protocols.base import Capability
from flashsh.session import Session
from flashsh.sims.uf2_drive import BOOTLOADER_BYTE
from flashsh.transports.fat16 import FatVolume
from flashsh.transports.msc_volume import SectorDevice
from tests.usb.msc_helpers import arm_app, drive, open_session

SAMD21 = 0x68ED2B88
RP2040 = 0xE48BFF56


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def files_on(image: str) -> dict[str, bytes]:
    device = SectorDevice(image)
    try:
        volume = FatVolume(device, image)
        return {e.name: volume.read_file(e) for e in volume.entries()}
    finally:
        device.close()


def test_a_bin_lands_at_the_app_start_and_the_drive_leaves(tmp_path: Path) -> None:
    app = arm_app(0x2000, 3000)
    with drive("zero", tmp_path) as sim:
        session = open_session(sim)
        assert session.info.chip == "SAMD21G18A"
        assert session.memory_map.flash.size == 256 * 1024  # CURRENT.UF2 is twice the flash
        image = load_image(write(tmp_path, "app.bin", app), default_address=0x2000)
        result = operations.program(session, image)
        assert sim.chip.read(0x2000, len(app)) == app
        assert sim.chip.read(0, 0x2000) == bytes([BOOTLOADER_BYTE]) * 0x2000
        assert sim.vanished
        # The board reset after the last block: the FAT and directory writes behind it
        # failed, which counts as success.
        assert session.bootloader.last_write["late_error"] == "Input/output error"
        assert any("not a failure" in note for note in result["notes"])
        with pytest.raises(TargetError, match="has gone: the board runs its application"):
            session.memory_map  # noqa: B018
        session.close()


def test_a_hex_is_sent_as_the_pages_it_covers(tmp_path: Path) -> None:
    with drive("zero", tmp_path) as sim:
        session = open_session(sim)
        hex_path = write(tmp_path, "app.hex", encode_hex(0x2000, arm_app(0x2000, 600)))
        operations.program(session, load_image(hex_path))
        assert sim.chip.flashed == [0x2000, 0x2100, 0x2200]
        assert sim.chip.read(0x2000 + 600, 168) == b"\xff" * 168
        session.close()


def test_a_matching_uf2_is_copied_unchanged(tmp_path: Path) -> None:
    app = arm_app(0x2000, 1024)
    built = image_to_uf2(load_image(write(tmp_path, "a.bin", app), default_address=0x2000), SAMD21)
    uf2 = write(tmp_path, "app.uf2", built)
    with drive("zero", tmp_path) as sim:
        session = open_session(sim)
        result = operations.program(session, load_image(uf2))
        assert "copied" in result["notes"][0]
        # The directory entry never made it (the board left first); the sectors did.
        assert "NEW.UF2" not in files_on(sim.path)
        assert b"".join(d for _, d in sim.received if d.startswith(b"UF2\n")) == built
        assert sim.chip.read(0x2000, 1024) == app
        session.close()


def test_a_uf2_for_another_family_is_refused_before_writing(tmp_path: Path) -> None:
    built = image_to_uf2(
        load_image(write(tmp_path, "a.bin", bytes(512)), default_address=0x10000000), RP2040
    )
    with drive("zero", tmp_path) as sim:
        session = open_session(sim)
        for force in (False, True):
            with pytest.raises(ImageError) as err:
                operations.program(
                    session, load_image(write(tmp_path, "pico.uf2", built)), force=force
                )
            assert str(err.value) == (
                f"{tmp_path}/pico.uf2 is for RP2040 (0xe48bff56), but this drive is a SAMD21 "
                "(0x68ed2b88) board (Board-ID SAMD21G18A-Zero-v0) (use the .uf2 built for "
                "this board)"
            )
        assert "NEW.UF2" not in files_on(sim.path) and not sim.chip.flashed
        session.close()


def test_a_bin_over_the_bootloader_is_refused(tmp_path: Path) -> None:
    with drive("zero", tmp_path) as sim:
        session = open_session(sim)
        image = load_image(write(tmp_path, "boot.bin", arm_app(0, 1024)), address=0)
        with pytest.raises(ImageError, match=r"inside the bootloader \(0x0000-0x1fff\)"):
            operations.program(session, image)
        assert not sim.chip.flashed
        session.close()


def test_an_image_not_linked_for_the_app_start_is_refused(tmp_path: Path) -> None:
    with drive("metro_m4", tmp_path) as sim:
        session = open_session(sim)
        image = load_image(write(tmp_path, "a.bin", arm_app(0x2000, 512)), default_address=0x4000)
        with pytest.raises(
            ImageError, match="not linked for 0x4000: its reset handler is at 0x21c0"
        ):
            operations.program(session, image)
        session.close()


def test_verify_reads_current_uf2_while_the_drive_is_there(tmp_path: Path) -> None:
    app = arm_app(0x2000, 2048)
    with drive("zero", tmp_path) as sim:
        sim.chip.flash[0x2000 : 0x2000 + len(app)] = app
        sim.replug()  # CURRENT.UF2 now shows the application
        session = open_session(sim)
        assert Capability.READ in session.capabilities
        image = load_image(write(tmp_path, "app.bin", app), default_address=0x2000)
        assert operations.verify_image(session, image)["match"]
        changed = bytearray(app)
        changed[1000] ^= 0x01
        other = load_image(write(tmp_path, "b.bin", bytes(changed)), default_address=0x2000)
        with pytest.raises(VerifyError, match="differs from the chip at 0x23e8"):
            operations.verify_image(session, other)
        session.close()


def test_verify_after_program_needs_the_drive_back(tmp_path: Path) -> None:
    app = arm_app(0x2000, 512)
    with drive("zero", tmp_path) as sim:
        session = open_session(sim)
        image = load_image(write(tmp_path, "app.bin", app), default_address=0x2000)
        with pytest.raises(UnsupportedError) as err:
            operations.program(session, image, verify=True)
        assert "the board left its bootloader after the write" in err.value.message
        assert (
            err.value.hint == "double-tap reset to bring the drive back, then `verify_image FILE`"
        )
        assert sim.chip.read(0x2000, 512) == app  # the write itself went through
        sim.replug()  # the user double-taps reset
        assert operations.verify_image(session, image)["match"]
        session.close()


def test_the_rp2040_drive_cannot_verify_and_says_why(tmp_path: Path) -> None:
    with drive("pico", tmp_path) as sim:
        session = open_session(sim)
        assert session.info.chip == "RP2040" and session.info.details["board_id"] == "RPI-RP2"
        image = load_image(
            write(tmp_path, "app.bin", bytes(range(256)) * 20), default_address=0x10000000
        )
        with pytest.raises(UnsupportedError) as err:
            operations.program(session, image, verify=True)
        assert str(err.value) == (
            "uf2 cannot read back, so it cannot verify (the RP2040 UF2 drive has no "
            "CURRENT.UF2: nothing on it shows the flash)"
        )
        assert not sim.chip.flashed  # refused before anything was written
        operations.program(session, image)
        assert sim.chip.read(0x10000000, image.size) == image.segments[0].data
        # The 4 KiB sector around the last block was erased: the rest of it is blank.
        assert sim.chip.read(0x10000000 + image.size, 4096 * 2 - image.size) == b"\xff" * (
            8192 - image.size
        )
        session.close()


def test_samd51_erases_the_8k_block_around_a_changed_row(tmp_path: Path) -> None:
    with drive("metro_m4", tmp_path) as sim:
        sim.chip.flash[0x4000:0x6000] = b"\x00" * 0x2000  # an older application
        sim.replug()
        session = open_session(sim)
        app = arm_app(0x4000, 512)
        operations.program(
            session, load_image(write(tmp_path, "a.bin", app), default_address=0x4000)
        )
        assert sim.chip.read(0x4000, 512) == app
        assert sim.chip.read(0x4200, 0x1E00) == b"\xff" * 0x1E00
        session.close()


def test_a_drive_that_never_leaves_is_an_error(tmp_path: Path) -> None:
    with drive("zero", tmp_path, stuck=True) as sim:
        session = open_session(sim)
        session.bootloader.vanish_timeout = 0
        image = load_image(write(tmp_path, "a.bin", arm_app(0x2000, 600)), default_address=0x2000)
        with pytest.raises(TargetError) as err:
            operations.program(session, image)
        assert err.value.message.endswith(
            "but the drive is still there after 0 s: the bootloader did not take every block"
        )
        session.close()


def test_an_unknown_board_is_named_with_a_way_out(tmp_path: Path) -> None:
    mount = tmp_path / "NRF52BOOT"
    mount.mkdir()
    (mount / "INFO_UF2.TXT").write_bytes(
        b"UF2 Bootloader 0.6.0\r\nBoard-ID: nRF52840-Feather-revD\r\n"
    )
    with pytest.raises(TargetError) as err:
        Session.open(str(mount), ProbeOptions())
    assert "Board-ID nRF52840-Feather-revD, which flashsh has no flash layout for" in str(err.value)
    session = Session.open(str(mount), ProbeOptions(chip="samd51"))
    assert session.memory_map.app_start == 0x4000
    session.close()


def test_uf2_blocks_written_to_the_image_are_what_uf2conv_would_write(tmp_path: Path) -> None:
    app = arm_app(0x2000, 700)
    with drive("zero", tmp_path, stuck=True) as sim:
        session = open_session(sim)
        session.bootloader.vanish_timeout = 0
        image = load_image(write(tmp_path, "a.bin", app), default_address=0x2000)
        with pytest.raises(TargetError):
            operations.program(session, image)
        written = files_on(sim.path)["NEW.UF2"]
        blocks = [written[i : i + 512] for i in range(0, len(written), 512)]
        assert [struct.unpack_from("<8I", b)[2:8] for b in blocks] == [
            (0x2000, 0x2000 + 256 * n, 256, n, 3, SAMD21) for n in range(3)
        ]
        session.close()
