"""ELF reading: physical addresses, AVR memory spaces, and broken files.

Most tests build their ELF files with the small writer below, so they need no toolchain;
one test checks a real avr-gcc build against avr-objcopy when those are installed.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path
from typing import NamedTuple

import pytest

from flashsh.errors import ImageError
from flashsh.images import load_image

PT_LOAD, PT_NOTE = 1, 4
ET_REL, ET_EXEC = 1, 2
EM_ARM, EM_AVR = 40, 83


class Phdr(NamedTuple):
    vaddr: int
    paddr: int
    data: bytes
    memsz: int = 0  # 0: same as len(data)
    type: int = PT_LOAD


def make_elf(headers: list[Phdr], *, machine: int = EM_ARM, kind: int = ET_EXEC, entry=0) -> bytes:
    """A 32-bit little-endian ELF with program headers and segment data, no sections."""
    header_size, phdr_size = 52, 32
    offset = header_size + phdr_size * len(headers)
    table, payload = b"", b""
    for h in headers:
        memsz = h.memsz or len(h.data)
        table += struct.pack(
            "<8I", h.type, offset + len(payload), h.vaddr, h.paddr, len(h.data), memsz, 5, 4
        )
        payload += h.data
    ident = b"\x7fELF" + bytes([1, 1, 1]) + bytes(9)  # ELFCLASS32, little-endian, version 1
    header = struct.pack(
        "<16sHHIIIIIHHHHHH",
        ident,
        kind,
        machine,
        1,
        entry,
        header_size if headers else 0,
        0,  # no section header table
        0,
        header_size,
        phdr_size,
        len(headers),
        40,
        0,
        0,
    )
    return header + table + payload


def write(tmp_path: Path, content: bytes, name: str = "firmware.elf") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def load_error(path: Path) -> ImageError:
    with pytest.raises(ImageError) as err:
        load_image(path)
    return err.value


TEXT = bytes(range(0x80))
DATA = b"\x2a\x00\x00\x00\x10\x20\x30\x40"


def test_data_is_taken_from_its_physical_address(tmp_path: Path) -> None:
    # Like a Cortex-M build: .data runs in RAM at 0x20000000 but is stored after .text.
    path = write(
        tmp_path,
        make_elf(
            [
                Phdr(0x08000000, 0x08000000, TEXT),
                Phdr(0x20000000, 0x08000100, DATA, memsz=0x40),
                Phdr(0x20000040, 0x20000040, b"", memsz=0x200),  # .bss: nothing to program
                Phdr(0, 0, b"GNU\x00note", type=PT_NOTE),
            ],
            entry=0x08000041,
        ),
    )
    image = load_image(path)
    assert image.segments == ((0x08000000, TEXT), (0x08000100, DATA))
    assert (image.format, image.entry, image.extra, image.notes) == ("elf", 0x08000041, {}, ())
    assert image.data_at(0x080000FE, 4) == b"\xff\xff\x2a\x00"


def test_all_three_extensions_read_as_elf(tmp_path: Path) -> None:
    content = make_elf([Phdr(0x1000, 0x1000, b"code")])
    for name in ("a.elf", "a.axf", "a.out"):
        assert load_image(write(tmp_path, content, name)).segments == ((0x1000, b"code"),)


def test_avr_memories_are_split(tmp_path: Path) -> None:
    # The layout avr-gcc produces for a sketch with EEMEM data and FUSES.
    path = write(
        tmp_path,
        make_elf(
            [
                Phdr(0x000000, 0x000000, b"\x0c\x94\x34\x00"),
                Phdr(0x800100, 0x000004, b"\x2a\x00"),  # .data: stored right after .text
                Phdr(0x800102, 0x800102, b"", memsz=1),  # .bss
                Phdr(0x810000, 0x810000, b"\x01\x02\x03\x04"),  # .eeprom
                Phdr(0x820000, 0x820000, b"\xff\xde\xfd"),  # .fuse
                Phdr(0x830000, 0x830000, b"\xfc"),  # .lock
            ],
            machine=EM_AVR,
        ),
    )
    image = load_image(path)
    assert image.segments == ((0, b"\x0c\x94\x34\x00\x2a\x00"),)
    eeprom = image.extra["eeprom"]
    assert (eeprom.region, eeprom.segments) == ("eeprom", ((0, b"\x01\x02\x03\x04"),))
    assert image.notes == (
        f"{path}: left out 3 bytes of fuses at 0x00820000; set fuses with the fuse commands",
        f"{path}: left out 1 bytes of lock bits at 0x00830000",
    )


def test_high_addresses_are_flash_on_other_machines(tmp_path: Path) -> None:
    # Only AVR folds other memories in above 0x800000; elsewhere it is just an address.
    path = write(tmp_path, make_elf([Phdr(0x810000, 0x810000, b"data")]))
    image = load_image(path)
    assert (image.segments, image.extra) == (((0x810000, b"data"),), {})


def test_not_an_elf_file(tmp_path: Path) -> None:
    path = write(tmp_path, b"\x00\x50\x00\x20\xc1\x20\x00\x08")
    error = load_error(path)
    assert error.message == f"{path} is not an ELF file (it does not start with 0x7f 'ELF')"
    assert error.hint == "it looks like raw binary; use --format bin and give the address"


def test_hex_file_named_elf(tmp_path: Path) -> None:
    path = write(tmp_path, b":0100000041BE\n:00000001FF\n")
    assert load_error(path).hint == "it looks like Intel HEX; rename it or use --format hex"


def test_no_loadable_segments(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        make_elf([Phdr(0, 0, b"note", type=PT_NOTE), Phdr(0x20000000, 0x20000000, b"", 64)]),
    )
    assert load_error(path).message == f"{path} has no loadable segments with data"


def test_object_file(tmp_path: Path) -> None:
    path = write(tmp_path, make_elf([], kind=ET_REL), "main.o.elf")
    assert load_error(path).message == f"{path} is an object file, not a linked program"


def test_truncated_segment_data(tmp_path: Path) -> None:
    content = make_elf([Phdr(0x08000000, 0x08000000, TEXT)])
    path = write(tmp_path, content[:-16])
    assert load_error(path).message == (
        f"{path}: the segment for 0x08000000 runs past the end of the file"
    )


def test_truncated_header(tmp_path: Path) -> None:
    content = make_elf([Phdr(0x08000000, 0x08000000, TEXT)])
    path = write(tmp_path, content[:30])
    error = load_error(path)
    assert error.message.startswith(f"{path}: damaged ELF file (")
    assert error.hint == "rebuild it, or check that it was copied completely"


def test_segments_at_one_address(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        make_elf([Phdr(0x1000, 0x1000, b"abcd"), Phdr(0x2000, 0x1002, b"xy")]),
    )
    assert load_error(path).message == f"{path}: data at 0x1002 is given twice"


# ---------------------------------------------------------------- a real avr-gcc build

AVR_PROGRAM = r"""
#include <avr/io.h>
#include <avr/eeprom.h>
#include <avr/fuse.h>
FUSES = { .low = 0xFF, .high = 0xDE, .extended = 0xFD };
uint8_t settings[4] EEMEM = { 1, 2, 3, 4 };
volatile uint8_t counter = 42;  /* in .data: runs in SRAM, stored in flash */
volatile uint8_t zeroed;        /* in .bss */
int main(void) { for (;;) { counter++; zeroed++; } }
"""


def _objcopy(tool: str, elf: Path, out: Path, *args: str) -> bytes:
    subprocess.run([tool, "-O", "binary", *args, str(elf), str(out)], check=True)
    return out.read_bytes()


@pytest.mark.debian
@pytest.mark.skipif(
    shutil.which("avr-gcc") is None or shutil.which("avr-objcopy") is None,
    reason="avr-gcc and avr-objcopy (Debian gcc-avr, binutils-avr) are not installed",
)
def test_avr_gcc_build_matches_avr_objcopy(tmp_path: Path) -> None:
    source = tmp_path / "blink.c"
    source.write_text(AVR_PROGRAM)
    elf = tmp_path / "blink.elf"
    subprocess.run(["avr-gcc", "-mmcu=atmega328p", "-Os", "-o", str(elf), str(source)], check=True)
    flash = _objcopy("avr-objcopy", elf, tmp_path / "flash.bin", "-j", ".text", "-j", ".data")
    eeprom = _objcopy(
        "avr-objcopy",
        elf,
        tmp_path / "eeprom.bin",
        "-j",
        ".eeprom",
        "--change-section-lma",
        ".eeprom=0",
    )

    image = load_image(elf)
    assert image.segments == ((0, flash),)
    # .data (starting with `counter`'s initial value) is stored right after the code.
    text = _objcopy("avr-objcopy", elf, tmp_path / "text.bin", "-j", ".text")
    data = _objcopy("avr-objcopy", elf, tmp_path / "data.bin", "-j", ".data")
    assert data[:1] == b"\x2a"
    assert image.data_at(len(text), len(data)) == data
    assert image.extra["eeprom"].segments == ((0, eeprom),)
    assert eeprom == b"\x01\x02\x03\x04"
    assert image.notes == (
        f"{elf}: left out 3 bytes of fuses at 0x00820000; set fuses with the fuse commands",
    )

    obj = tmp_path / "blink.o"
    subprocess.run(
        ["avr-gcc", "-mmcu=atmega328p", "-Os", "-c", "-o", str(obj), str(source)], check=True
    )
    with pytest.raises(ImageError) as err:
        load_image(obj, fmt="elf")
    assert err.value.message == f"{obj} is an object file, not a linked program"
