"""Intel HEX reading: every record type, and every error with its line number."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from intelhex import IntelHex

from flashsh.errors import ImageError
from flashsh.images import load_image

EOF_RECORD = ":00000001FF"


def record(kind: int, offset: int, payload: bytes = b"") -> str:
    """One Intel HEX record with a correct checksum."""
    body = bytes([len(payload), offset >> 8, offset & 0xFF, kind]) + payload
    return ":" + (body + bytes([-sum(body) & 0xFF])).hex().upper()


def write(tmp_path: Path, lines: list[str], name: str = "blink.hex") -> str:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def load_error(path: str) -> ImageError:
    with pytest.raises(ImageError) as err:
        load_image(path)
    return err.value


def test_known_record_is_checked_by_hand() -> None:
    # The example record from the specification's data-record section.
    assert record(0, 0x0100, bytes.fromhex("214601360121470136007EFE09D21901")) == (
        ":10010000214601360121470136007EFE09D2190140"
    )


def test_data_records_join_into_one_segment(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [record(0, 0x0000, b"\x0c\x94\x34\x00"), record(0, 0x0004, b"\x0c\x94"), EOF_RECORD],
    )
    image = load_image(path)
    assert image.segments == ((0, b"\x0c\x94\x34\x00\x0c\x94"),)
    assert (image.source, image.format, image.region, image.entry) == (path, "hex", "flash", None)


def test_extended_linear_address_and_start_linear_address(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [
            record(4, 0, b"\x08\x00"),
            record(0, 0x2000, b"\x01\x02"),
            record(4, 0, b"\x08\x01"),
            record(0, 0x0010, b"\x03"),
            record(5, 0, b"\x08\x00\x20\xc1"),
            EOF_RECORD,
        ],
    )
    image = load_image(path)
    assert image.segments == ((0x08002000, b"\x01\x02"), (0x08010010, b"\x03"))
    assert image.entry == 0x080020C1


def test_extended_segment_address_and_start_segment_address(tmp_path: Path) -> None:
    # avr-objcopy writes type 02 records for the upper 64 KiB of an ATmega1280/2560.
    path = write(
        tmp_path,
        [
            record(2, 0, b"\x10\x00"),
            record(0, 0x0010, b"\xaa\xbb"),
            record(3, 0, b"\x12\x34\x00\x05"),
            EOF_RECORD,
        ],
    )
    image = load_image(path)
    assert image.segments == ((0x10010, b"\xaa\xbb"),)
    assert image.entry == 0x12340 + 5


def test_segment_mode_offset_wraps_inside_the_segment(tmp_path: Path) -> None:
    path = write(tmp_path, [record(2, 0, b"\x10\x00"), record(0, 0xFFFE, b"ABCD"), EOF_RECORD])
    image = load_image(path)
    assert image.segments == ((0x10000, b"CD"), (0x1FFFE, b"AB"))


def test_lower_case_crlf_blank_lines_and_spaces_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "blink.hex"
    text = f"\r\n  {record(0, 0x10, b'hi').lower()}  \r\n\r\n{EOF_RECORD}\r\n"
    path.write_bytes(text.encode())
    assert load_image(path).segments == ((0x10, b"hi"),)


def test_text_after_the_end_of_file_record_is_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, [record(0, 0, b"x"), EOF_RECORD, "\x1a"])
    assert load_image(path).segments == ((0, b"x"),)


GOOD = record(0, 0x0000, b"\x01\x02\x03\x04")


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        (
            ":04000400" + "01020304" + "00",
            "line 2: bad checksum 0x00 (should be 0xee)",
        ),
        ("04000400010203040A", "line 2: not an Intel HEX record (no ':' at the start)"),
        (":0400040001G2030400", "line 2: 'G' in column 12 is not a hex digit"),
        (":040004", "line 2: record too short or cut off (6 hex digits after ':')"),
        (":04000400010203040", "line 2: record too short or cut off (17 hex digits after ':')"),
        (
            record(0, 4, b"\x01\x02\x03\x04")[:1] + "05" + record(0, 4, b"\x01\x02\x03\x04")[3:],
            "line 2: bad length: the record says 5 data bytes but holds 4",
        ),
        (record(6, 0, b""), "line 2: unknown record type 0x06 (Intel HEX has types 00 to 05)"),
        (
            record(4, 0, b"\x00\x01\x02"),
            "line 2: a type 04 (extended linear address) record holds 2 bytes, this one 3",
        ),
        (
            record(1, 0, b"\x00"),
            "line 2: a type 01 (end-of-file) record holds 0 bytes, this one 1",
        ),
    ],
)
def test_bad_records_name_file_and_line(tmp_path: Path, bad_line: str, message: str) -> None:
    path = write(tmp_path, [GOOD, bad_line, EOF_RECORD])
    error = load_error(path)
    assert error.message == f"{path} {message}"
    assert error.hint


def test_line_numbers_count_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path, [GOOD, "", "", ":0100000001FF", EOF_RECORD])
    assert load_error(path).message == f"{path} line 4: bad checksum 0xff (should be 0xfe)"


def test_address_given_twice_names_both_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [
            record(0, 0x0000, bytes(16)),
            record(0, 0x0010, bytes(16)),
            record(0, 0x0020, bytes(16)),
            record(0, 0x0018, bytes(4)),
            EOF_RECORD,
        ],
    )
    assert load_error(path).message == (
        f"{path} line 4: address 0x0018 is given a second time (first at line 2)"
    )


def test_overlap_lines_are_reported_in_file_order(tmp_path: Path) -> None:
    # The later line holds the lower address; the message still names line 2 as first.
    path = write(tmp_path, [record(0, 0x0010, bytes(16)), record(0, 0x0008, bytes(16)), EOF_RECORD])
    assert load_error(path).message == (
        f"{path} line 2: address 0x0010 is given a second time (first at line 1)"
    )


def test_overlap_after_extended_address_uses_the_full_address(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [
            record(4, 0, b"\x08\x00"),
            record(0, 0x0100, b"ab"),
            record(4, 0, b"\x00\x00"),
            record(4, 0, b"\x08\x00"),
            record(0, 0x0101, b"c"),
            EOF_RECORD,
        ],
    )
    assert load_error(path).message == (
        f"{path} line 5: address 0x08000101 is given a second time (first at line 2)"
    )


def test_record_after_end_of_file_record(tmp_path: Path) -> None:
    # What `cat app.hex bootloader.hex` produces: the second half would be lost.
    path = write(tmp_path, [GOOD, EOF_RECORD, record(0, 0x7E00, b"\x11"), EOF_RECORD])
    error = load_error(path)
    assert error.message == f"{path} line 3: record after the end-of-file record of line 2"
    assert "delete line 2" in (error.hint or "")


def test_missing_end_of_file_record(tmp_path: Path) -> None:
    path = write(tmp_path, [GOOD])
    error = load_error(path)
    assert error.message == (f"{path} has no end-of-file record (:00000001FF); it may be cut short")


def test_only_an_end_of_file_record_holds_no_data(tmp_path: Path) -> None:
    path = write(tmp_path, [EOF_RECORD])
    assert load_error(path).message == f"{path} holds no data"


def test_binary_file_named_hex_suggests_bin(tmp_path: Path) -> None:
    path = tmp_path / "firmware.hex"
    path.write_bytes(b"\x0c\x94\x5c\x00\x0c\x94\x6e\x00" * 8)
    error = load_error(str(path))
    assert error.message == f"{path} line 1: not an Intel HEX record (no ':' at the start)"
    assert error.hint == "it looks like raw binary; use --format bin and give the address"


def test_elf_file_named_hex_suggests_elf(tmp_path: Path) -> None:
    path = tmp_path / "firmware.hex"
    path.write_bytes(b"\x7fELF\x01\x01\x01" + bytes(50))
    assert load_error(str(path)).hint == "it looks like an ELF file; rename it or use --format elf"


def test_agrees_with_the_intelhex_package(tmp_path: Path) -> None:
    # Sparse data across several 64 KiB banks, written by an independent implementation.
    rng = random.Random(7)
    reference = IntelHex()
    for _ in range(40):
        start = rng.randrange(0x08000000, 0x08040000)
        reference.puts(start, rng.randbytes(rng.randrange(1, 300)))
    reference.start_addr = {"EIP": 0x08000131}
    path = tmp_path / "reference.hex"
    reference.write_hex_file(str(path))
    image = load_image(path)
    ours = {s.address + i: b for s in image.segments for i, b in enumerate(s.data)}
    expected = reference.todict()
    del expected["start_addr"]
    assert ours == expected
    assert image.entry == 0x08000131
