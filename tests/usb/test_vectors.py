"""The vector-table check every Cortex-M USB bootloader makes before writing."""

from __future__ import annotations

import struct

import pytest

from flashsh import operations
from flashsh.errors import ImageError
from flashsh.images import Image
from flashsh.images.vectors import check_vector_table
from flashsh.protocols import ProbeOptions
from flashsh.session import Session


def app(linked_for: int, size: int = 4096) -> bytes:
    return struct.pack("<II", 0x20005000, linked_for + 0x1C1) + bytes(size - 8)


def test_an_image_linked_where_it_is_placed_passes():
    check_vector_table(Image([(0x08002000, app(0x08002000))]), 0x08002000)


def test_a_stack_pointer_outside_sram_is_refused():
    data = struct.pack("<II", 0x08001000, 0x08002101) + bytes(100)
    with pytest.raises(ImageError, match="initial stack pointer 0x08001000 is not in SRAM"):
        check_vector_table(Image([(0x08002000, data)]), 0x08002000)


def test_a_build_for_another_start_is_named():
    image = Image([(0x08005000, app(0x08002000))], source="klipper.bin")
    with pytest.raises(ImageError) as caught:
        check_vector_table(image, 0x08005000)
    text = str(caught.value)
    assert "klipper.bin is not linked for 0x08005000" in text
    assert "looks linked for 0x08002000 (the stm32duino (Maple)" in text


def test_an_image_placed_elsewhere_is_left_to_other_checks():
    check_vector_table(Image([(0x08004000, app(0x08002000))]), 0x08002000)


def test_maple_refuses_a_build_for_alt_2_written_through_alt_1():
    session = Session.open("sim://maple?throttle=0", ProbeOptions())
    try:
        image = Image([(0x08005000, app(0x08002000))], source="klipper.bin")
        with pytest.raises(ImageError, match="not linked for 0x08005000"):
            operations.program(session, image)
        result = operations.program(session, image, force=True)
        assert result["pages_written"] == 4
    finally:
        session.close()
