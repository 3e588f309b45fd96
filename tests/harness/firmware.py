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

* ``stk500v2_mega2560``: the package's stk500v2/stk500boot_v2_mega2560.hex as
  shipped (Arduino Mega 2560 "wiring" bootloader, STK500v2, ATmega2560 at
  16 MHz, 115200 baud, 8 KiB boot section at 0x3E000).
* ``atmegaboot1280``: atmega/ATmegaBOOT_168_atmega1280.hex as shipped (Arduino
  Mega with the ATmega1280, STK500v1, 57600 baud, 4 KiB at 0x1F000).

simavr 1.6 runs both big parts as they are: UART0, RAMPZ for ELPM/SPM above
64 KiB, EIND and the 3-byte return addresses of the 2560 all work, and avrdude
programs and verifies images across the 64 KiB and 128 KiB lines.  Its hex
reader prints "unsupported check type 03" for the start-address record at the
end of both files; that record carries no data and the warning is harmless.

What these two bootloaders do by themselves (tests/realfw/
test_avrdude_realfw_mega.py checks each point):

* 2560, before the first byte: it waits about 0.83 s after reset, then jumps
  to 0x0000 whatever the flash holds.  With an empty application the erased
  flash (0xFFFF executes as a skip instruction) runs up into the boot section
  and the bootloader starts over, so a blank board keeps answering; with an
  application present the host must send within those 0.83 s of the reset.
  AvrSim's default park_app=True halts the core at that jump (random test
  images must not run), so there the board acts as one with an application.
* 2560, after the first byte: each further byte may take about 5 s; then it
  jumps to the application only if flash word 0 is not 0xFFFF.  A blank
  board stays in the bootloader for good.
* 2560, watchdog: the shipped build clears MCUSR and stops the watchdog, and
  after a watchdog reset (WDRF) calls app_start() through EICALL while EIND
  is still 1 from its own start-up code: it lands at byte 0x20000, not at
  0x0000.  Below 128 KiB of application that is erased flash, which leads back
  into the bootloader (MCUSR now 0), so the application starts again only
  after the 0.83 s wait; a larger application is entered in its middle.
* 2560, "!!!" monitor: three '!' among the first 10 bytes start it (later
  ones, e.g. inside page data, are harmless in this build).  It prints five
  lines of 25 '!', then reads its banner through a 16-bit pointer from the
  first 64 KiB instead of 0x3xxxx: on a blank board an endless 0xFF stream.
  It reads no key while doing so; only a reset gets out.
* 1280 (ATmegaBOOT): each byte, the first included, may take about 1.3 s;
  then it jumps to 0x0000 even on a blank board (which again leads back into
  the bootloader).  It neither reads nor clears MCUSR and leaves the watchdog
  running: an application that resets through the watchdog ends in a 16 ms
  reset loop inside the bootloader until an external reset (opening the port
  = DTR) clears the watchdog.

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
    "atmega1280": _Target("atmega1280", "m1280", 0x20000, 256, bytes.fromhex("1e9703")),
    "atmega2560": _Target("atmega2560", "m2560", 0x40000, 256, bytes.fromhex("1e9801")),
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


# Hex files used as shipped: name -> (path under BOOTLOADERS_DIR, MCU, baud, boot start).
_SHIPPED = {
    "stk500v2_mega2560": ("stk500v2/stk500boot_v2_mega2560.hex", "atmega2560", 115200, 0x3E000),
    "atmegaboot1280": ("atmega/ATmegaBOOT_168_atmega1280.hex", "atmega1280", 57600, 0x1F000),
}


def get_bootloader(name: str, build_dir: Path | None = None) -> Bootloader:
    """Locate or build one of: optiboot328, optiboot168, atmegaboot328,
    stk500v2_mega2560, atmegaboot1280."""
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
    if name in _SHIPPED:
        rel, mcu, baud, boot_start = _SHIPPED[name]
        hex_path = BOOTLOADERS_DIR / rel
        if not hex_path.exists():
            raise HarnessUnavailable(f"{hex_path} missing (arduino-core-avr)")
        t = _TARGETS[mcu]
        return Bootloader(
            name, hex_path, t.mcu, t.avrdude_part, 16_000_000, baud,
            boot_start, t.flash_size, t.page_size, t.signature,
        )  # fmt: skip
    raise KeyError(f"unknown bootloader {name!r}")
