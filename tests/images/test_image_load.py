"""Choosing a reader, raw binaries, file-system errors, and save_image."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flashsh.errors import ImageError
from flashsh.images import EXTENSIONS, READERS, WRITERS, load_image, save_image
from flashsh.images.load import _resolve


def load_error(path: object, **kwargs: object) -> ImageError:
    with pytest.raises(ImageError) as err:
        load_image(path, **kwargs)  # type: ignore[arg-type]
    return err.value


def test_every_registered_reader_and_writer_resolves() -> None:
    assert set(EXTENSIONS.values()) == set(READERS)
    for spec in [*READERS.values(), *WRITERS.values()]:
        assert callable(_resolve(spec))


def test_bin_goes_to_the_default_address(tmp_path: Path) -> None:
    path = tmp_path / "klipper.bin"
    path.write_bytes(b"\x00\x50\x00\x20\xc1\x20\x00\x08")
    image = load_image(path, default_address=0x08002000)
    assert image.segments == ((0x08002000, b"\x00\x50\x00\x20\xc1\x20\x00\x08"),)
    assert (image.format, image.source, image.entry) == ("bin", str(path), None)


def test_bin_goes_to_an_explicit_address(tmp_path: Path) -> None:
    path = tmp_path / "klipper.BIN"  # extensions match in any case
    path.write_bytes(b"abc")
    assert load_image(path, address=0x100, default_address=0x08002000).segments == (
        (0x100, b"abc"),
    )


def test_explicit_format_reads_an_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "dump.dat"
    path.write_bytes(b"\x01\x02")
    assert load_image(path, fmt="bin").segments == ((0, b"\x01\x02"),)
    # The format may also be spelled as an extension.
    assert load_image(path, fmt=".BIN", address=4).segments == ((4, b"\x01\x02"),)


def test_explicit_format_overrides_the_extension(tmp_path: Path) -> None:
    path = tmp_path / "blink.hex"
    path.write_text(":0100000041BE\n:00000001FF\n")
    assert load_image(path, fmt="bin", address=0x10).segments[0].data.startswith(b":01")


def test_unknown_extension_without_format(tmp_path: Path) -> None:
    path = tmp_path / "dump.dat"
    path.write_bytes(b"\x01\x02")
    error = load_error(path)
    assert error.message == f"cannot tell the format of {path} from the extension '.dat'"
    assert error.hint == (
        "name it .bin or .dfu or .elf or .hex or .uf2, or use --format (bin, dfu, elf, hex, uf2)"
    )


def test_unknown_extension_hints_at_what_the_content_looks_like(tmp_path: Path) -> None:
    path = tmp_path / "firmware"
    path.write_text(":0100000041BE\n:00000001FF\n")
    error = load_error(path)
    assert error.message == f"cannot tell the format of {path} from a name without an extension"
    assert error.hint == "it looks like hex: use --format hex"
    assert load_image(path, fmt="ihex").segments == ((0, b"A"),)


def test_unknown_format_name(tmp_path: Path) -> None:
    path = tmp_path / "a.srec"
    path.write_text("S00F000068656C6C6F202020202000003C\n")
    error = load_error(path, fmt="srec")
    assert error.message == "cannot read image format 'srec'"
    assert error.hint == "use one of: bin, dfu, elf, hex, uf2"


def test_hex_accepts_its_own_start_address_only(tmp_path: Path) -> None:
    path = tmp_path / "app.hex"
    path.write_text(":020000040800F2\n:0100000041BE\n:00000001FF\n")
    assert load_image(path, address=0x08000000).start == 0x08000000
    error = load_error(path, address=0x08002000)
    assert error.message == (
        f"{path} is hex and says where its data goes (0x08000000); it cannot be moved to 0x08002000"
    )


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.hex"
    assert load_error(path).message == f"{path}: no such file"


def test_missing_relative_file_says_where_it_looked(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_error("nope.bin").message == f"nope.bin: no such file (looked in {tmp_path})"


def test_directory(tmp_path: Path) -> None:
    folder = tmp_path / "build.hex"
    folder.mkdir()
    assert load_error(folder).message == f"{folder} is a directory, not a firmware file"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_permission_denied(tmp_path: Path) -> None:
    path = tmp_path / "locked.bin"
    path.write_bytes(b"x")
    path.chmod(0)
    try:
        assert load_error(path).message == f"cannot read {path}: permission denied"
    finally:
        path.chmod(0o644)


def test_permission_denied_and_other_os_errors(tmp_path: Path, monkeypatch) -> None:
    # Simulated, so the mapping is checked even when the tests run as root.
    path = tmp_path / "locked.bin"
    path.write_bytes(b"x")

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", refuse)
    error = load_error(path)
    assert error.message == f"cannot read {path}: permission denied"
    assert error.hint == f"check its permissions (ls -l {path})"

    def fail(self: Path) -> bytes:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(Path, "read_bytes", fail)
    assert load_error(path).message == f"cannot read {path}: Input/output error"


@pytest.mark.parametrize("name", ["empty.hex", "empty.bin", "empty.elf"])
def test_empty_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"")
    error = load_error(path)
    assert error.message == f"{path} is empty"


# ---------------------------------------------------------------- save_image


def test_save_hex_round_trip_across_64k(tmp_path: Path) -> None:
    data = bytes(range(256)) * 2
    path = tmp_path / "dump.hex"
    save_image(path, 0x0800FF00, data)
    lines = path.read_text().splitlines()
    # Extended linear address records before each 64 KiB bank, and an end record.
    assert lines[0] == ":020000040800F2"
    assert ":020000040801F1" in lines
    assert lines[-1] == ":00000001FF"
    image = load_image(path)
    assert image.segments == ((0x0800FF00, data),)


def test_save_hex_below_64k_needs_no_extended_address(tmp_path: Path) -> None:
    path = tmp_path / "eeprom.ihx"
    save_image(path, 0x10, b"\x01\x02\x03")
    assert path.read_text().splitlines() == [":03001000010203E7", ":00000001FF"]
    assert load_image(path).segments == ((0x10, b"\x01\x02\x03"),)


def test_save_bin_writes_bytes_only(tmp_path: Path) -> None:
    path = tmp_path / "flash.bin"
    save_image(path, 0x7E00, b"\xaa\x55")
    assert path.read_bytes() == b"\xaa\x55"
    assert load_image(path, address=0x7E00).segments == ((0x7E00, b"\xaa\x55"),)


def test_save_with_explicit_format(tmp_path: Path) -> None:
    path = tmp_path / "dump.txt"
    save_image(path, 0, b"A", fmt="hex")
    assert path.read_text().splitlines() == [":0100000041BE", ":00000001FF"]


def test_save_refuses_formats_it_cannot_write(tmp_path: Path) -> None:
    with pytest.raises(ImageError) as err:
        save_image(tmp_path / "dump.elf", 0, b"x")
    assert err.value.message == f"cannot write elf files like {tmp_path / 'dump.elf'}"
    assert err.value.hint == "use one of these formats: bin, hex, uf2"
    with pytest.raises(ImageError, match="cannot tell the format of .*dump.txt"):
        save_image(tmp_path / "dump.txt", 0, b"x")
    assert not (tmp_path / "dump.txt").exists()


def test_save_into_a_missing_folder(tmp_path: Path) -> None:
    path = tmp_path / "no" / "dump.bin"
    with pytest.raises(ImageError) as err:
        save_image(path, 0, b"x")
    assert err.value.message == (
        f"cannot write {path}: the folder {tmp_path / 'no'} does not exist"
    )


def test_save_onto_a_directory(tmp_path: Path) -> None:
    folder = tmp_path / "out.bin"
    folder.mkdir()
    with pytest.raises(ImageError) as err:
        save_image(folder, 0, b"x")
    assert err.value.message == f"{folder} is a directory"
