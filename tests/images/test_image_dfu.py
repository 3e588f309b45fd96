"""DFU files: the DFU 1.1 suffix and its CRC, DfuSe containers with several targets and
elements, one-line errors for damaged files, and agreement with Debian's dfu-util tools
(dfu-suffix, dfu-prefix, dfuse-pack)."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from flashsh.errors import ImageError
from flashsh.images import Image, load_image
from flashsh.images.dfu_file import (
    Element,
    Suffix,
    Target,
    add_suffix,
    dfu_crc,
    dfuse_from_image,
    encode_dfu,
    encode_dfuse,
    read_dfu,
    usb_id_mismatch,
)
from flashsh.images.sniff import guess_format

# dfu.md §6.1: "hello" + suffix for bcdDevice 0xFFFF, PID 0xDF11, VID 0x0483, bcdDFU 0x0100.
VECTOR = bytes.fromhex("68656c6c6fffff11df8304000155464410c7269052")


def write(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def load_error(path: Path, **kwargs: object) -> str:
    with pytest.raises(ImageError) as caught:
        load_image(path, **kwargs)  # type: ignore[arg-type]
    text = str(caught.value)
    assert "\n" not in text
    return text


def two_targets() -> list[Target]:
    flash = Target(
        0,
        (Element(0x08000000, bytes(range(256)) * 3), Element(0x08004000, b"\x11" * 40)),
        "Internal Flash",
    )
    options = Target(1, (Element(0x1FFFC000, b"\xaa\x55\xff\x00"),), "Option Bytes")
    return [flash, options]


# ------------------------------------------------------------------ the suffix


def test_suffix_crc_matches_the_fact_sheet_vector() -> None:
    assert encode_dfu(b"hello", vendor=0x0483, product=0xDF11) == VECTOR
    assert dfu_crc(VECTOR[:-4]) == 0x529026C7


def test_plain_file_is_placed_like_a_bin_and_keeps_its_ids(tmp_path: Path) -> None:
    path = write(tmp_path, "smoothie.dfu", VECTOR)
    image = load_image(path, default_address=0x4000)
    assert image.segments == ((0x4000, b"hello"),)
    assert image.format == "dfu"
    assert image.usb_ids == (0x0483, 0xDF11)
    assert (image.suffix.device, image.suffix.dfu_version) == (0xFFFF, 0x0100)
    assert load_image(path, address=0x100).segments == ((0x100, b"hello"),)


@pytest.mark.parametrize("size", [0, 1, 511, 512, 513, 5000])
def test_plain_round_trip(tmp_path: Path, size: int) -> None:
    payload = bytes((i * 7 + 3) & 0xFF for i in range(size))
    data = encode_dfu(payload, vendor=0x1D50, product=0x6015, device=0x0100)
    image = read_dfu("a.dfu", data, default_address=0)
    assert image.data_at(0, size) == payload and image.size == size
    assert (image.suffix.vendor, image.suffix.product, image.suffix.device) == (
        0x1D50,
        0x6015,
        0x0100,
    )


def test_a_longer_suffix_is_stripped_whole(tmp_path: Path) -> None:
    # bLength may exceed 16: the extra bytes sit in front of the standard fields.
    head = b"firmware" + b"XTRA" + struct.pack("<HHHH3sB", 0xFFFF, 0xFFFF, 0xFFFF, 0x100,
                                               b"UFD", 20)  # fmt: skip
    data = head + struct.pack("<I", dfu_crc(head))
    assert read_dfu("a.dfu", data).segments == ((0, b"firmware"),)


def test_stellaris_prefix_is_kept_in_the_data_with_a_note() -> None:
    payload = struct.pack("<BBHI", 1, 0, 0x2000 // 1024, 6) + b"abcdef"
    image = read_dfu("lm.dfu", encode_dfu(payload))
    assert image.segments == ((0, payload),)
    assert image.notes == (
        "lm.dfu starts with a TI Stellaris DFU prefix (load address 0x2000); it is sent "
        "as part of the data, as dfu-util does",
    )


# ------------------------------------------------------------------ DfuSe


def test_dfuse_alt_0_elements_become_segments_other_targets_extra(tmp_path: Path) -> None:
    path = write(tmp_path, "fw.dfu", encode_dfuse(two_targets(), vendor=0x0483, product=0xDF11))
    image = load_image(path)
    assert image.format == "dfuse"
    assert image.segments == (
        (0x08000000, bytes(range(256)) * 3),
        (0x08004000, b"\x11" * 40),
    )
    assert list(image.extra) == ["alt 1 (Option Bytes)"]
    assert image.extra["alt 1 (Option Bytes)"].segments == ((0x1FFFC000, b"\xaa\x55\xff\x00"),)
    assert [(t.alt, t.name, len(t.elements)) for t in image.targets] == [
        (0, "Internal Flash", 2),
        (1, "Option Bytes", 1),
    ]
    assert image.usb_ids == (0x0483, 0xDF11)
    assert image.suffix.dfu_version == 0x011A


def test_dfuse_round_trip_keeps_every_target_and_element() -> None:
    targets = [
        Target(0, (Element(0x08000000, b"a" * 10), Element(0x08000100, b"b" * 3))),
        Target(2, (Element(0x20000000, b"c"),), "SRAM"),
        Target(0, (Element(0x08010000, b"d" * 8),), "more flash"),
    ]
    image = read_dfu("r.dfu", encode_dfuse(targets, vendor=0x1234, product=0x5678))
    assert list(image.targets) == targets
    # Two alt-0 targets are one image; unnamed targets are listed by number only.
    assert [s.address for s in image.segments] == [0x08000000, 0x08000100, 0x08010000]
    assert list(image.extra) == ["alt 2 (SRAM)"]


def test_dfuse_touching_elements_join_into_one_segment() -> None:
    target = Target(0, (Element(0x100, b"ab"), Element(0x102, b"cd")))
    assert read_dfu("t.dfu", encode_dfuse([target])).segments == ((0x100, b"abcd"),)


def test_dfuse_from_an_image_writes_its_segments() -> None:
    image = Image([(0x08000000, b"xy"), (0x08000400, b"z")])
    target = dfuse_from_image(image, name="flash")
    assert read_dfu("i.dfu", encode_dfuse([target])).segments == image.segments


def test_dfuse_file_cannot_be_moved(tmp_path: Path) -> None:
    path = write(tmp_path, "fw.dfu", encode_dfuse(two_targets()))
    assert load_image(path, address=0x08000000).start == 0x08000000
    assert load_error(path, address=0x08002000) == (
        f"{path} is a DfuSe file and says where its data goes (0x08000000); it cannot be "
        "moved to 0x08002000 (leave out the address)"
    )


def test_dfuse_without_alt_0_data_names_its_targets(tmp_path: Path) -> None:
    path = write(tmp_path, "opt.dfu", encode_dfuse(two_targets()[1:]))
    assert load_error(path).startswith(
        f"{path} holds no data for alternate setting 0 (flash); its targets: alt 1 (Option Bytes)"
    )


def test_dfuse_leftover_bytes_are_noted_not_refused() -> None:
    body = encode_dfuse([Target(0, (Element(0, b"ab"),))])[:-16] + b"junk"
    image = read_dfu("l.dfu", _dfuse_suffixed(body))
    assert image.segments == ((0, b"ab"),)
    assert image.notes == ("l.dfu: 4 unused bytes after the last DfuSe target",)


def _dfuse_suffixed(body: bytes) -> bytes:
    return add_suffix(body, Suffix(0x0483, 0xDF11, 0xFFFF, 0x011A))


# ------------------------------------------------------------------ damage


def test_bad_crc_names_both_values(tmp_path: Path) -> None:
    damaged = bytearray(VECTOR)
    damaged[1] ^= 0x20
    path = write(tmp_path, "bad.dfu", bytes(damaged))
    text = load_error(path)
    assert text.startswith(
        f"{path}: DFU suffix CRC mismatch: the suffix says 0x529026c7, the file's bytes give 0x"
    )
    assert "download it again" in text


def test_missing_suffix_says_so_and_suggests_bin(tmp_path: Path) -> None:
    path = write(tmp_path, "raw.dfu", b"\x00\x50\x00\x20" + bytes(100))
    assert load_error(path) == (
        f"{path} has no DFU suffix: its last 16 bytes lack the 'UFD' signature (it looks "
        "like raw binary; use --format bin and give the address)"
    )


def test_hex_named_dfu_is_recognised(tmp_path: Path) -> None:
    path = write(tmp_path, "app.dfu", b":0100000041BE\n:00000001FF\n" * 2)
    assert load_error(path).endswith("(it looks like Intel HEX; rename it or use --format hex)")


def test_too_short(tmp_path: Path) -> None:
    path = write(tmp_path, "cut.dfu", VECTOR[:10])
    assert load_error(path).startswith(
        f"{path} is too short for a DFU file: 10 bytes, the DFU suffix alone takes 16"
    )


def test_impossible_suffix_length() -> None:
    head = b"ab" + struct.pack("<HHHH3sB", 0xFFFF, 0xFFFF, 0xFFFF, 0x100, b"UFD", 200)
    with pytest.raises(ImageError, match="DFU suffix length 200 is impossible"):
        read_dfu("x.dfu", head + struct.pack("<I", dfu_crc(head)))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[:300], "DfuSe target 1 (alt 0) is cut short: it says 824 bytes, the "
         "file holds 15"),
        (lambda b: b[:100], "DfuSe target 1 of 2 is cut short (its header needs 274 bytes "
         "at offset 11, the file has 89)"),
        (lambda b: b[:11] + b"Tgt..." + b[17:], "DfuSe target 1 lacks its 'Target' signature "
         "(offset 11)"),
        (lambda b: b[:5] + b"\x02" + b[6:], "DfuSe format version 2; only version 1 exists"),
        (lambda b: b"NotSe" + b[5:], "the DFU suffix says DfuSe (bcdDFU 0x011a) but the file "
         "does not start with the 'DfuSe' prefix"),
        (lambda b: b[:285 + 4] + struct.pack("<I", 5000) + b[293:],
         "element 1 of DfuSe target 1 (alt 0) at 0x08000000 says 5000 bytes, its target "
         "holds only 816 more"),
    ],
)  # fmt: skip
def test_damaged_dfuse_names_the_part(tmp_path: Path, damage, message: str) -> None:
    body = encode_dfuse(two_targets())[:-16]
    path = write(tmp_path, "d.dfu", _dfuse_suffixed(damage(body)))
    text = load_error(path)
    assert text.startswith(f"{path}: {message}"), text


def test_dfuse_body_behind_a_plain_suffix_is_refused(tmp_path: Path) -> None:
    body = encode_dfuse(two_targets())[:-16]
    path = write(tmp_path, "mixed.dfu", encode_dfu(body))
    assert load_error(path).startswith(
        f"{path} holds a DfuSe container but its suffix says bcdDFU 0x0100, not 0x011a"
    )


# ------------------------------------------------------------------ ids, sniffing


def test_usb_id_mismatch_honours_wildcards_and_either_id() -> None:
    image = read_dfu("s.dfu", encode_dfu(b"x", vendor=0x1D50, product=0x6015))
    assert usb_id_mismatch(image, (0x1D50, 0x6015)) is None
    assert usb_id_mismatch(image, (0x0483, 0xDF11), (0x1D50, 0x6015)) is None
    assert usb_id_mismatch(image, (0x0483, 0xDF11)) == (
        "s.dfu is for USB device 1d50:6015 (its DFU suffix says so), not 0483:df11"
    )
    any_product = read_dfu("v.dfu", encode_dfu(b"x", vendor=0x1D50))
    assert usb_id_mismatch(any_product, (0x1D50, 0x1234)) is None
    assert "1d50:any" in (usb_id_mismatch(any_product, (0x0483, 0x1234)) or "")
    assert usb_id_mismatch(read_dfu("w.dfu", encode_dfu(b"x")), (1, 2)) is None
    assert usb_id_mismatch(Image([(0, b"x")]), (1, 2)) is None


def test_dfu_files_are_recognised_for_hints(tmp_path: Path) -> None:
    assert guess_format(VECTOR) == "dfu"
    assert guess_format(encode_dfuse(two_targets())) == "dfu"
    path = write(tmp_path, "firmware", VECTOR)
    assert load_error(path).endswith("(it looks like dfu: use --format dfu)")
    assert load_image(path, fmt="dfu").segments == ((0, b"hello"),)


# ------------------------------------------------------------------ dfu-util's tools


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} not on PATH (Debian package dfu-util)")
    return found


def run(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


@pytest.mark.debian
def test_flashsh_plain_file_passes_dfu_suffix_check(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 5
    path = write(tmp_path, "fw.dfu", encode_dfu(payload, vendor=0x0483, product=0xDF11,
                                                device=0x2200))  # fmt: skip
    out = run(tool("dfu-suffix"), "-c", str(path))
    crc = struct.unpack("<I", path.read_bytes()[-4:])[0]
    for line in ("BCD device:\t0x2200", "Product ID:\t0xDF11", "Vendor ID:\t0x0483",
                 "BCD DFU:\t0x0100", "Length:\t\t16", f"CRC:\t\t0x{crc:08X}"):  # fmt: skip
        assert line in out


@pytest.mark.debian
def test_dfu_suffix_output_loads_with_the_same_bytes(tmp_path: Path) -> None:
    payload = bytes((i * 13) & 0xFF for i in range(3000))
    path = write(tmp_path, "fw.dfu", payload)
    run(tool("dfu-suffix"), "-a", str(path), "-v", "0483", "-p", "df11")
    image = load_image(path, default_address=0x08000000)
    assert image.segments == ((0x08000000, payload),)
    assert image.usb_ids == (0x0483, 0xDF11)
    assert path.read_bytes() == encode_dfu(payload, vendor=0x0483, product=0xDF11)


@pytest.mark.debian
def test_dfu_prefix_stellaris_file_loads_as_dfu_util_sends_it(tmp_path: Path) -> None:
    # dfu-prefix writes TI Stellaris (or NXP LPC) prefixes, not DfuSe ones: dfu-util
    # sends such a prefix to the device as part of the data.
    payload = b"\x00\x10\x00\x20" + bytes(range(200))
    path = write(tmp_path, "lm.dfu", payload)
    run(tool("dfu-prefix"), "-s", "0x1800", "-a", str(path))
    run(tool("dfu-suffix"), "-a", str(path))
    image = load_image(path)
    prefix = struct.pack("<BBHI", 1, 0, 0x1800 // 1024, len(payload))
    assert image.segments == ((0, prefix + payload),)
    assert "load address 0x1800" in image.notes[0]


@pytest.mark.debian
def test_dfuse_pack_files_load_with_the_same_elements(tmp_path: Path) -> None:
    flash_a = write(tmp_path, "a.bin", bytes(range(256)) * 4)
    flash_b = write(tmp_path, "b.bin", b"\x5a" * 100)
    option = write(tmp_path, "o.bin", b"\xaa\x55")
    out = tmp_path / "packed.dfu"
    run(tool("dfuse-pack"), "-b", f"0x08000000:{flash_a}", "-b", f"0x08008000:{flash_b}",
        "-b", f"0x1fffc000@1:{option}", "-D", "0x0483:0xdf11", str(out))  # fmt: skip
    image = load_image(out)
    assert image.segments == (
        (0x08000000, flash_a.read_bytes()),
        (0x08008000, flash_b.read_bytes()),
    )
    (label,) = image.extra
    assert label.startswith("alt 1") and image.extra[label].segments == ((0x1FFFC000, b"\xaa\x55"),)
    assert image.usb_ids == (0x0483, 0xDF11)


@pytest.mark.debian
def test_flashsh_dfuse_file_reads_back_in_dfuse_pack_and_dfu_suffix(tmp_path: Path) -> None:
    path = write(tmp_path, "fw.dfu", encode_dfuse(two_targets()))
    dump = run(tool("dfuse-pack"), "-d", str(path), cwd=tmp_path)
    assert "CRC ERROR" not in dump and "PARSE ERROR" not in dump
    assert "targets: 2" in dump
    assert "alt setting: 0" in dump and "alt setting: 1" in dump
    for number, element in enumerate(two_targets()[0].elements):
        dumped = tmp_path / f"fw.dfu.target0.image{number}.bin"
        assert dumped.read_bytes() == element.data
    assert (tmp_path / "fw.dfu.target1.image0.bin").read_bytes() == b"\xaa\x55\xff\x00"
    assert "BCD DFU:\t0x011A" in run(tool("dfu-suffix"), "-c", str(path))
