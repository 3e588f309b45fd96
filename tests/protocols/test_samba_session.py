"""A whole SAM-BA session on a fake SAMD21 monitor: connect, program with on-chip CRC
verify, the refusals, mass erase that spares the bootloader, reset."""

from __future__ import annotations

import struct

import pytest

from flashsh import operations
from flashsh.errors import ImageError
from flashsh.images import Image
from flashsh.images.image import Segment
from flashsh.protocols.samba import connect
from flashsh.session import Session
from tests.protocols.samba_fake import FakeSamd21


def image(address: int, data: bytes, source: str = "klipper.bin") -> Image:
    return Image(segments=(Segment(address, data),), source=source, format="bin")


def firmware(start: int, size: int = 5000) -> bytes:
    body = bytes((i * 13) & 0xFF for i in range(size - 8))
    return struct.pack("<II", 0x20008000, start + 0x101) + body


@pytest.fixture
def fake():
    return FakeSamd21()


@pytest.fixture
def session(fake):
    bootloader = connect(fake)
    assert bootloader is not None
    return Session(bootloader, "fake")


def test_connect_reads_bootprot_and_maps_the_bootloader(session):
    info = session.info
    assert info.chip == "ATSAMD21G18A"
    assert info.details["application_start"] == "0x2000"
    assert info.details["bootprot"].startswith("8192 bytes")
    assert info.details["extensions"] == "XYZ"
    assert info.details["write_path"] == "Arduino Y"
    assert session.memory_map.bootloader == (0, 0x2000)


def test_program_then_verify_by_crc_reads_nothing_back(session, fake):
    data = firmware(0x2000)
    fake.log.clear()
    result = operations.program(session, image(0x2000, data), verify=True)
    assert result["verified"]
    assert bytes(fake.flash[0x2000 : 0x2000 + len(data)]) == data
    assert not any(entry.startswith("R") for entry in fake.log)
    assert sum(entry.startswith("Z") for entry in fake.log) == 2  # one per 4 KiB


def test_crc_mismatch_falls_back_to_read_back(session, fake):
    data = firmware(0x2000)
    operations.program(session, image(0x2000, data))
    fake.flash[0x2400] ^= 0x01
    with pytest.raises(Exception, match=r"differs from the chip at 0x2400"):
        operations.verify_image(session, image(0x2000, data))


def test_bootloader_area_refused_with_the_offset(session, fake):
    with pytest.raises(
        ImageError,
        match=r"at 0x0000 is inside the bootloader \(0x0000-0x1fff\); "
        r"the application must start at 0x2000",
    ):
        operations.program(session, image(0x0, firmware(0x0)))
    assert all(entry[0] not in "XYS" for entry in fake.log[-3:])


def test_image_linked_for_zero_refused_at_0x2000_unless_forced(session, fake):
    data = firmware(0x0)
    with pytest.raises(ImageError, match=r"not linked for 0x2000: its reset handler"):
        operations.program(session, image(0x2000, data))
    operations.program(session, image(0x2000, data), force=True)
    assert bytes(fake.flash[0x2000 : 0x2000 + len(data)]) == data


def test_mass_erase_spares_the_bootloader(session, fake):
    operations.program(session, image(0x2000, firmware(0x2000)))
    operations.erase(session)
    assert fake.flash[:8] != b"\xff" * 8
    assert fake.flash[0x2000:] == b"\xff" * (len(fake.flash) - 0x2000)
    assert any(entry.startswith("X") and entry.endswith(",2000") for entry in fake.log)


def test_reset_goes_through_aircr(session, fake):
    operations.program(session, image(0x2000, firmware(0x2000)))
    session.start_application()
    assert fake.reset_requested


def test_sam3x_writes_through_the_copy_routine_on_both_planes_and_sets_gpnvm1():
    from tests.protocols.samba_fake import FakeSam3x

    fake = FakeSam3x()
    session = Session(connect(fake), "fake")
    assert session.info.details["write_path"] == "flashsh copy routine"
    # 600 bytes at the end of plane 0 and 300 at the start of plane 1.
    data = bytes((i * 7) & 0xFF for i in range(900))
    start = 0xC0000 - 0x258
    operations.program(session, image(start, data, "data.bin"), verify=True)
    assert bytes(fake.flash[start - 0x80000 : start - 0x80000 + 900]) == data
    writes = [(plane, arg) for plane, cmd, arg in fake.fcr if cmd == 0x03]  # EWP
    assert writes == [(0, 1021), (0, 1022), (0, 1023), (1, 0), (1, 1)]
    # Flash base still blank: GPNVM1 stays clear, the ROM keeps answering.
    assert fake.gpnvm == 0
    firmware_at_base = firmware(0x80000, 600)
    operations.program(session, image(0x80000, firmware_at_base))
    assert fake.gpnvm == 0b10
    assert session.bootloader.identify().details["gpnvm1"] == "1 (boot from flash)"
    session.start_application()
    assert fake.reset_requested


def test_sam3x_mass_erase_is_ea_on_both_planes():
    from tests.protocols.samba_fake import FakeSam3x

    fake = FakeSam3x()
    session = Session(connect(fake), "fake")
    operations.erase(session)
    assert [(plane, cmd) for plane, cmd, _ in fake.fcr if cmd == 0x05] == [(0, 5), (1, 5)]
