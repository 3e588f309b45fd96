"""The Image model: normalising segments, reading bytes back, cutting pages."""

from __future__ import annotations

import pytest

from flashsh.errors import ImageError
from flashsh.images import Image, Page


def test_segments_are_sorted_joined_and_empty_runs_dropped() -> None:
    image = Image([(0x10, b"ab"), (0, b"xy"), (2, b"cd"), (0x20, b"")], source="a.bin")
    assert image.segments == ((0, b"xycd"), (0x10, b"ab"))
    assert (image.start, image.end, image.size) == (0, 0x12, 6)
    assert image.segments[1].end == 0x12


def test_overlapping_segments_name_the_address() -> None:
    with pytest.raises(ImageError) as err:
        Image([(0, b"abcd"), (2, b"x")], source="a.bin")
    assert err.value.message == "a.bin: data at 0x0002 is given twice"


def test_negative_address_is_refused() -> None:
    with pytest.raises(ImageError, match="negative address -4"):
        Image([(-4, b"ab")], source="a.bin")


def test_empty_image() -> None:
    image = Image([])
    assert (image.start, image.end, image.size) == (0, 0, 0)
    assert list(image.pages(128)) == []
    assert image.data_at(0, 2) == b"\xff\xff"


def test_data_at_fills_gaps_and_outside() -> None:
    image = Image([(4, b"ab"), (8, b"cd")])
    assert image.data_at(2, 10) == b"\xff\xffab\xff\xffcd\xff\xff"
    assert image.data_at(5, 4, fill=0) == b"b\x00\x00c"
    assert image.data_at(9, 1) == b"d"


def test_contains() -> None:
    image = Image([(4, b"ab"), (8, b"cd")])
    assert [a for a in range(12) if image.contains(a)] == [4, 5, 8, 9]


def test_pages_pad_partial_pages_with_ff() -> None:
    image = Image([(0x05, b"ABC"), (0x0E, b"DEFG")])
    pages = list(image.pages(8))
    assert pages == [
        Page(0x00, b"\xff" * 5 + b"ABC", True),
        Page(0x08, b"\xff" * 6 + b"DE", True),
        Page(0x10, b"FG" + b"\xff" * 6, True),
    ]


def test_two_segments_in_one_page_make_one_page() -> None:
    image = Image([(0x1, b"a"), (0x6, b"b"), (0x9, b"c")])
    assert list(image.pages(8)) == [
        (0x0, b"\xffa" + b"\xff" * 4 + b"b\xff", True),
        (0x8, b"\xffc" + b"\xff" * 6, True),
    ]


def test_pages_skip_gaps_unless_asked() -> None:
    image = Image([(0x00, b"\x01"), (0x40, b"\x02")])
    assert [p.address for p in image.pages(16)] == [0x00, 0x40]
    with_gaps = list(image.pages(16, gaps=True))
    assert [(p.address, p.has_data) for p in with_gaps] == [
        (0x00, True),
        (0x10, False),
        (0x20, False),
        (0x30, False),
        (0x40, True),
    ]
    assert with_gaps[1].data == b"\xff" * 16


def test_blank_data_still_makes_a_page() -> None:
    # A page the file fills with 0xFF must still reach a page-erasing bootloader.
    image = Image([(0x100, b"\xff" * 4)])
    assert list(image.pages(128)) == [(0x100, b"\xff" * 128, True)]


def test_pages_use_the_fill_byte_and_unpack_as_triples() -> None:
    image = Image([(2, b"\x11")])
    for address, data, has_data in image.pages(4, fill=0x00):
        assert (address, data, has_data) == (0, b"\x00\x00\x11\x00", True)


def test_pages_cover_every_byte_exactly_once() -> None:
    image = Image([(0x08000000 + i * 300, bytes([i]) * 100) for i in range(1, 20)])
    seen = bytearray()
    previous = -1
    for page in image.pages(256):
        assert page.address % 256 == 0 and page.address > previous
        previous = page.address
        seen += bytes(b for i, b in enumerate(page.data) if image.contains(page.address + i))
    assert bytes(seen) == b"".join(s.data for s in image.segments)


def test_page_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="page size"):
        list(Image([(0, b"a")]).pages(0))
