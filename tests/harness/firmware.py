"""Real Arduino bootloaders for the simulator tests.

Everything comes from Debian's arduino-core-avr package at test time:

* ``optiboot328`` / ``optiboot168``: built here from the optiboot.c the package
  ships (version 4.4, the Uno / ATmega168 build).  The package's own
  optiboot_atmega328.hex and optiboot_atmega168.hex are unusable: built with
  Debian's gcc-avr 5.4 and the Makefile's flags the code is 532 bytes, which
  does not fit the 512-byte boot section (it runs past the end of flash).  A
  few extra size options bring it to 488 bytes; nothing in the source changes.
* ``atmegaboot328``: the package's ATmegaBOOT_168_atmega328.hex as shipped
  (Duemilanove / old Nano bootloader, 57600 baud, 2 KiB boot section).

Build output goes to tests/_build/firmware/ and is never committed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .build import DEFAULT_BUILD_DIR, HarnessUnavailable

BOOTLOADERS_DIR = Path("/usr/share/arduino/hardware/arduino/avr/bootloaders")
AVR_LIBC_HEADER = Path("/usr/lib/avr/include/avr/io.h")

# Flags of the package's optiboot Makefile (atmega328 / atmega168 targets) ...
OPTIBOOT_CFLAGS = [
    "-g",
    "-Wall",
    "-Os",
    "-fno-inline-small-functions",
    "-fno-split-wide-types",
    "-mshort-calls",
    "-DF_CPU=16000000L",
    "-DLED_START_FLASHES=3",
    "-DBAUD_RATE=115200",
]
# ... plus size options so that gcc-avr 5.4's output fits the 512-byte section.
OPTIBOOT_SIZE_FLAGS = ["-fno-tree-scev-cprop", "-fno-move-loop-invariants", "-ffunction-sections"]
OPTIBOOT_LDFLAGS = ["-Wl,--relax", "-Wl,--gc-sections", "-nostartfiles", "-nostdlib"]


@dataclass(frozen=True)
class Bootloader:
    name: str
    hex_path: Path
    mcu: str  # simavr / avr-gcc MCU name
    avrdude_part: str  # avrdude -p
    f_cpu: int
    baud: int
    boot_start: int  # byte address of the boot section (BOOTRST target)
    flash_size: int
    page_size: int
    signature: bytes


@dataclass(frozen=True)
class _Target:
    mcu: str
    avrdude_part: str
    flash_size: int
    page_size: int
    signature: bytes


_TARGETS = {
    "atmega328p": _Target("atmega328p", "m328p", 0x8000, 128, bytes.fromhex("1e950f")),
    "atmega168": _Target("atmega168", "m168", 0x4000, 128, bytes.fromhex("1e9406")),
}


def read_ihex(path: Path) -> dict[int, int]:
    """Intel HEX -> {address: byte}.  Rejects overlapping data."""
    data: dict[int, int] = {}
    base = 0
    for lineno, line in enumerate(Path(path).read_text().split(), 1):
        rec = bytes.fromhex(line.lstrip(":"))
        count, addr, rtype, payload = rec[0], int.from_bytes(rec[1:3], "big"), rec[3], rec[4:-1]
        if len(payload) != count or sum(rec) & 0xFF:
            raise ValueError(f"{path}:{lineno}: bad record")
        if rtype == 0:
            for i, b in enumerate(payload):
                a = base + addr + i
                if a in data:
                    raise ValueError(f"{path}:{lineno}: address 0x{a:x} written twice")
                data[a] = b
        elif rtype == 1:
            break
        elif rtype == 2:
            base = int.from_bytes(payload, "big") << 4
        elif rtype == 4:
            base = int.from_bytes(payload, "big") << 16
    return data


def flash_image(hex_path: Path, flash_size: int) -> bytes:
    """The flash contents a hex file produces on an erased chip (0xFF elsewhere)."""
    data = read_ihex(hex_path)
    if data and max(data) >= flash_size:
        raise ValueError(f"{hex_path}: data up to 0x{max(data):x} beyond {flash_size}-byte flash")
    image = bytearray(b"\xff" * flash_size)
    for a, b in data.items():
        image[a] = b
    return bytes(image)


def _need_avr_toolchain() -> None:
    for tool in ("avr-gcc", "avr-objcopy"):
        if not shutil.which(tool):
            raise HarnessUnavailable(f"{tool} missing (gcc-avr, binutils-avr)")
    if not AVR_LIBC_HEADER.exists():
        raise HarnessUnavailable(f"avr-libc missing ({AVR_LIBC_HEADER})")


def build_optiboot(mcu: str = "atmega328p", build_dir: Path | None = None) -> Path:
    """Build optiboot 4.4 for ``mcu`` from Debian's source; return the .hex path."""
    target = _TARGETS[mcu]
    src_dir = BOOTLOADERS_DIR / "optiboot"
    source = src_dir / "optiboot.c"
    if not source.exists():
        raise HarnessUnavailable(f"optiboot source missing ({source}; arduino-core-avr)")
    _need_avr_toolchain()

    out_dir = Path(build_dir or DEFAULT_BUILD_DIR) / "firmware"
    hex_path = out_dir / f"optiboot_{mcu}.hex"
    boot_start = target.flash_size - 512
    cflags = [*OPTIBOOT_CFLAGS, *OPTIBOOT_SIZE_FLAGS, f"-mmcu={mcu}", f"-I{src_dir}"]
    ldflags = [
        f"-Wl,--section-start=.text=0x{boot_start:x}",
        f"-Wl,--section-start=.version=0x{target.flash_size - 2:x}",
        *OPTIBOOT_LDFLAGS,
    ]
    recipe = " ".join([str(source), *cflags, *ldflags]) + "\n"
    stamp = hex_path.with_suffix(".cmd")
    if (
        hex_path.exists()
        and stamp.exists()
        and stamp.read_text() == recipe
        and hex_path.stat().st_mtime >= source.stat().st_mtime
    ):
        return hex_path

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        obj, elf, tmp_hex = Path(tmp, "optiboot.o"), Path(tmp, "optiboot.elf"), Path(tmp, "o.hex")
        steps = [
            ["avr-gcc", *cflags, "-c", str(source), "-o", str(obj)],
            ["avr-gcc", *cflags, *ldflags, str(obj), "-o", str(elf)],
            # as the Makefile's %.hex rule; --set-start 0 drops the start record
            ["avr-objcopy", "-j", ".text", "-j", ".data", "-j", ".version",
             "--set-section-flags", ".version=alloc,load", "--set-start", "0",
             "-O", "ihex", str(elf), str(tmp_hex)],
        ]  # fmt: skip
        for cmd in steps:
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise HarnessUnavailable(f"optiboot build failed: {' '.join(cmd)}\n{proc.stderr}")
        # Code and version word must both fit, without overlapping, in the boot section.
        data = read_ihex(tmp_hex)
        if min(data) != boot_start or max(data) >= target.flash_size:
            raise HarnessUnavailable(f"optiboot for {mcu} does not fit its 512-byte section")
        os.replace(tmp_hex, hex_path)
    stamp.write_text(recipe)
    return hex_path


def get_bootloader(name: str, build_dir: Path | None = None) -> Bootloader:
    """Locate or build one of: optiboot328, optiboot168, atmegaboot328."""
    if name in ("optiboot328", "optiboot168"):
        mcu = "atmega328p" if name == "optiboot328" else "atmega168"
        t = _TARGETS[mcu]
        return Bootloader(
            name, build_optiboot(mcu, build_dir), mcu, t.avrdude_part, 16_000_000, 115200,
            t.flash_size - 512, t.flash_size, t.page_size, t.signature,
        )  # fmt: skip
    if name == "atmegaboot328":
        hex_path = BOOTLOADERS_DIR / "atmega" / "ATmegaBOOT_168_atmega328.hex"
        if not hex_path.exists():
            raise HarnessUnavailable(f"{hex_path} missing (arduino-core-avr)")
        t = _TARGETS["atmega328p"]
        return Bootloader(
            name, hex_path, t.mcu, t.avrdude_part, 16_000_000, 57600,
            0x7800, t.flash_size, t.page_size, t.signature,
        )  # fmt: skip
    raise KeyError(f"unknown bootloader {name!r}")
