"""UF2 files: what the writer emits (the layout uf2conv.py makes) and what the reader keeps."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from flashsh.chips.uf2 import family_text, find_family
from flashsh.errors import ImageError, TargetError
from flashsh.images import load_image, save_image
from flashsh.images.uf2 import image_to_uf2, read_uf2

SAMD21 = 0x68ED2B88
SAMD51 = 0x55114460
RP2040 = 0xE48BFF56


def header(block: bytes) -> tuple[int, ...]:
    return struct.unpack_from("<8I", block)


def blocks_of(data: bytes) -> list[bytes]:
    assert len(data) % 512 == 0
    return [data[i : i + 512] for i in range(0, len(data), 512)]


def make_block(
    address: int,
    payload: bytes,
    number: int,
    total: int,
    family: int | None = None,
    flags: int = 0,
    size: int | None = None,
) -> bytes:
    """A block laid out by hand from the README's table, independent of the writer."""
    if family is not None:
        flags |= 0x2000
    head = struct.pack(
        "<8I",
        0x0A324655,
        0x9E5D5157,
        flags,
        address,
        len(payload) if size is None else size,
        number,
        total,
        family or 0,
    )
    return head + payload.ljust(476, b"\0") + struct.pack("<I", 0x0AB16F30)


# ---------------------------------------------------------------- writing


def test_bin_becomes_256_byte_blocks_with_the_family(tmp_path: Path) -> None:
    data = bytes((i * 7) & 0xFF for i in range(1000))
    path = tmp_path / "app.bin"
    path.write_bytes(data)
    out = image_to_uf2(load_image(path, default_address=0x2000), SAMD21)
    blocks = blocks_of(out)
    assert len(blocks) == 4  # ceil(1000 / 256)
    for number, block in enumerate(blocks):
        magic0, magic1, flags, address, size, block_no, total, family = header(block)
        assert (magic0, magic1) == (0x0A324655, 0x9E5D5157)
        assert block[508:] == struct.pack("<I", 0x0AB16F30)
        assert (flags, address, size, block_no, total, family) == (
            0x2000,
            0x2000 + 256 * number,
            256,
            number,
            4,
            SAMD21,
        )
        assert block[32 + 256 : 508] == bytes(220)  # the rest of the data area is zero
    assert b"".join(b[32:288] for b in blocks) == data + bytes(24)  # last chunk zero-padded


def test_bin_conversion_matches_the_block_layout_byte_for_byte(tmp_path: Path) -> None:
    data = bytes(range(256)) * 2 + b"tail"
    path = tmp_path / "app.bin"
    path.write_bytes(data)
    image = load_image(path, default_address=0x10000000)
    expected = b"".join(
        make_block(0x10000000 + 256 * n, data[256 * n : 256 * n + 256], n, 3, RP2040, size=256)
        for n in range(3)
    )
    assert image_to_uf2(image, RP2040) == expected


def test_hex_fills_blocks_with_ff_and_skips_pages_without_data(tmp_path: Path) -> None:
    path = tmp_path / "app.hex"
    # 4 bytes at 0x08004010 and 2 at 0x08004310 (one page between them holds nothing).
    path.write_text(
        hex_record(4, 0, b"\x08\x00")
        + hex_record(0, 0x4010, bytes.fromhex("DEADBEEF"))
        + hex_record(0, 0x4310, b"\x01\x02")
        + ":00000001FF\n"
    )
    blocks = blocks_of(image_to_uf2(load_image(path), 0x57755A57))
    assert [header(b)[3] for b in blocks] == [0x08004000, 0x08004300]
    assert [header(b)[5:7] for b in blocks] == [(0, 2), (1, 2)]
    first = bytearray(b"\xff" * 256)
    first[0x10:0x14] = bytes.fromhex("DEADBEEF")
    assert blocks[0][32:288] == first
    assert blocks[1][32:288] == b"\xff" * 0x10 + b"\x01\x02" + b"\xff" * (256 - 0x12)


def hex_record(kind: int, address: int, data: bytes) -> str:
    body = bytes([len(data), address >> 8, address & 0xFF, kind]) + data
    return f":{(body + bytes([-sum(body) & 0xFF])).hex().upper()}\n"


def test_without_a_family_flags_and_word_28_are_zero() -> None:
    out = image_to_uf2(load_image_from(b"\x01" * 300, 0x4000), None)
    for block in blocks_of(out):
        assert header(block)[2] == 0 and header(block)[7] == 0


def load_image_from(data: bytes, address: int):
    from flashsh.images.raw import read_bin

    return read_bin("mem.bin", data, address=address)


def test_a_dump_saved_as_uf2_is_chunked_from_its_address(tmp_path: Path) -> None:
    path = tmp_path / "dump.uf2"
    save_image(path, 0x2000, b"\xaa" * 300)
    blocks = blocks_of(path.read_bytes())
    assert [header(b)[3:7] for b in blocks] == [(0x2000, 256, 0, 2), (0x2100, 256, 1, 2)]
    assert blocks[1][32:288] == b"\xaa" * 44 + bytes(212)


def test_written_uf2_reads_back_as_the_same_data(tmp_path: Path) -> None:
    data = bytes(range(200)) * 3
    path = tmp_path / "app.uf2"
    path.write_bytes(image_to_uf2(load_image_from(data, 0x4000), SAMD51))
    image = load_image(path)
    assert image.format == "uf2" and image.family == SAMD51 and image.copyable
    assert image.segments == ((0x4000, data + bytes(768 - 600)),)


# ---------------------------------------------------------------- reading


def test_blocks_not_for_main_flash_are_skipped_and_said(tmp_path: Path) -> None:
    path = tmp_path / "app.uf2"
    path.write_bytes(
        make_block(0x2000, b"\x11" * 256, 0, 2, SAMD21)
        + make_block(0x9000, b"comment", 0, 1, flags=0x1)
        + make_block(0, b"source.c", 0, 1, flags=0x1000)
        + make_block(0x2100, b"\x22" * 256, 1, 2, SAMD21)
    )
    image = load_image(path)
    assert image.segments == ((0x2000, b"\x11" * 256 + b"\x22" * 256),)
    assert image.notes == (
        "skipped 1 blocks marked 'not main flash'",
        "skipped 1 blocks of embedded files",
    )


def test_payload_sizes_other_than_256_place_the_data_they_say() -> None:
    data = make_block(0x1000, b"\x01" * 476, 0, 2, SAMD21) + make_block(
        0x1000 + 476, b"\x02" * 100, 1, 2, SAMD21
    )
    image = read_uf2("odd.uf2", data)
    assert image.segments == ((0x1000, b"\x01" * 476 + b"\x02" * 100),)
    assert not image.copyable  # a bootloader that wants 256-byte blocks would skip these


def test_several_families_are_refused_naming_them() -> None:
    data = make_block(0x2000, b"a" * 256, 0, 1, SAMD21) + make_block(
        0x10000000, b"b" * 256, 0, 1, RP2040
    )
    with pytest.raises(ImageError) as err:
        read_uf2("both.uf2", data)
    assert err.value.message == (
        "both.uf2 holds blocks for 2 families: SAMD21 (0x68ed2b88), RP2040 (0xe48bff56)"
    )
    assert "\n" not in str(err.value)


def test_a_family_is_picked_from_several() -> None:
    data = (
        make_block(0x2000, b"a" * 256, 0, 1, SAMD21)
        + make_block(0x10000000, b"b" * 256, 0, 2, RP2040)
        + make_block(0x10000100, b"c" * 256, 1, 2, RP2040)
    )
    image = read_uf2("both.uf2", data, family=RP2040)
    assert image.segments == ((0x10000000, b"b" * 256 + b"c" * 256),)
    assert image.family == RP2040 and image.families == (SAMD21, RP2040)
    assert image.notes == (
        "kept the 2 blocks for RP2040 (0xe48bff56); ignored those for SAMD21 (0x68ed2b88)",
    )


def test_asking_for_a_family_the_file_lacks_names_what_it_has() -> None:
    data = make_block(0x2000, b"a" * 256, 0, 1, 0x12345678)
    with pytest.raises(ImageError) as err:
        read_uf2("x.uf2", data, family=SAMD51)
    assert err.value.message == (
        "x.uf2 holds no blocks for SAMD51 (0x55114460); it has 0x12345678 (unknown family)"
    )


def test_a_damaged_block_is_refused_with_its_offset() -> None:
    good = make_block(0x2000, b"a" * 256, 0, 2, SAMD21)
    bad = bytearray(make_block(0x2100, b"b" * 256, 1, 2, SAMD21))
    bad[508] ^= 0xFF  # the end magic
    with pytest.raises(ImageError) as err:
        read_uf2("x.uf2", good + bytes(bad))
    assert err.value.message == (
        "x.uf2: block 1 (offset 512) is not a UF2 block (its magic numbers are wrong)"
    )


def test_a_cut_file_and_an_oversized_payload_are_refused() -> None:
    block = make_block(0x2000, b"a" * 256, 0, 1, SAMD21)
    with pytest.raises(ImageError, match="not a whole number of 512-byte UF2 blocks"):
        read_uf2("x.uf2", block[:300])
    with pytest.raises(ImageError, match="claims 477 bytes of data, more than the 476"):
        read_uf2("x.uf2", make_block(0x2000, b"a" * 10, 0, 1, SAMD21, size=477))


def test_repeated_blocks_count_once_and_conflicting_ones_are_refused() -> None:
    one = make_block(0x2000, b"a" * 256, 0, 1, SAMD21)
    assert read_uf2("x.uf2", one + one).segments == ((0x2000, b"a" * 256),)
    other = make_block(0x2000, b"b" * 256, 0, 1, SAMD21)
    with pytest.raises(ImageError, match="two blocks carry different data for 0x2000"):
        read_uf2("x.uf2", one + other)


def test_blocks_may_come_in_any_order() -> None:
    data = make_block(0x2100, b"b" * 256, 1, 2, SAMD21) + make_block(
        0x2000, b"a" * 256, 0, 2, SAMD21
    )
    image = read_uf2("x.uf2", data)
    assert image.segments == ((0x2000, b"a" * 256 + b"b" * 256),) and image.copyable


def test_a_uf2_file_cannot_be_moved(tmp_path: Path) -> None:
    path = tmp_path / "app.uf2"
    path.write_bytes(make_block(0x2000, b"a" * 256, 0, 1, SAMD21))
    with pytest.raises(ImageError, match="cannot be moved to 0x4000"):
        load_image(path, address=0x4000)


def test_a_hex_file_named_uf2_gets_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "app.uf2"
    path.write_text(hex_record(0, 0, b"\x01\x02\x03\x04") + ":00000001FF\n")
    with pytest.raises(ImageError) as err:
        load_image(path)
    assert err.value.hint == "it looks like Intel HEX; rename it or use --format hex"


def test_family_names_and_ids() -> None:
    assert find_family("rp2040").id == RP2040
    assert find_family("0x55114460").name == "SAMD51"
    assert family_text(None) == "no family ID"
    with pytest.raises(TargetError, match="unknown UF2 family 'samd99'"):
        find_family("samd99")
