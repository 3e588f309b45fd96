"""Program + verify through SAM-BA at real speed: bossac against flashsh.

Each tool gets a fresh simulated board (``python -m flashsh.sims samba``) on a
pseudo-terminal, throttled to real time: USB-CDC paced at one 64-byte packet per 1 ms
frame (64,000 bytes/s each way), the flash controllers' page-write and erase times of
flashsh/sims/samba_eefc.py and samba_nvm.py. The image is 200 KiB with a vector table
for the application start.

* SAMD21 (Arduino Zero bootloader, 8 KiB): ``bossac -U --offset=0x2000 -w -v`` (Klipper's
  flags, less -b -R) against ``flashsh --protocol samba -c "program FILE verify"``. Both
  erase rows as they go, write through ``Y`` and verify with the bootloader's CRC (``Z``);
  bossac 1.9.1 then re-reads every page after the first (its CRC is not reset per page).
* SAM3X (Due, ROM): ``bossac -U -e -w -v`` (Klipper's, less -b) against the same flashsh
  command. bossac erases both planes (EA) and writes pages; flashsh erases and writes
  each page (EWP), so only what the image covers is erased.

The limit: the image once over the link (SAMD: verify by CRC costs nothing on the wire;
SAM3X: read back, so twice) plus the chip's programming time for its pages and the
cheapest erase of just what the image covers (SAMD21 rows; SAM3X page erase-and-write),
one after the other. A tool that sends the next page while the chip writes the last one
overlaps the two and can get below it.

    python benchmarks/samba.py [--size 204800] [--chips atsamd21g18a,at91sam3x8e]

Needs bossac on PATH (Debian package bossa-cli) for its figures. Not a test.
"""

from __future__ import annotations

import argparse
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flashsh.sims.samba_eefc import EefcTiming
from flashsh.sims.samba_nvm import D21_TIMING

LINK_BYTES_PER_SECOND = 64_000
CHIPS = {
    # name: (flash base, application start, stack pointer, bossac flags)
    "atsamd21g18a": (0x0, 0x2000, 0x20008000, ["--offset=0x2000", "-w", "-v"]),
    "at91sam3x8e": (0x80000, 0x80000, 0x20010000, ["-e", "-w", "-v"]),
}


def limit(chip: str, size: int) -> tuple[float, float]:
    """(link seconds, chip seconds) no tool can beat."""
    if chip == "atsamd21g18a":
        pages, rows = -(-size // 64), -(-size // 256)
        return size / LINK_BYTES_PER_SECOND, pages * D21_TIMING.page_write + rows * (
            D21_TIMING.erase
        )
    timing = EefcTiming()
    pages = -(-size // 256)
    # The SAM3X has no partial erase but erase-and-write per page (EWP): that is the
    # cheapest way to clear just what the image covers.
    return 2 * size / LINK_BYTES_PER_SECOND, pages * (timing.page_write + timing.page_erase)


def serve(chip: str, dump: Path) -> tuple[subprocess.Popen, str]:
    server = subprocess.Popen(
        [sys.executable, "-m", "flashsh.sims", "samba", "--chip", chip, "--dump", str(dump)],
        stdout=subprocess.PIPE,
        text=True,
    )
    return server, server.stdout.readline().strip()


def run(command: list[str], chip: str, dump: Path) -> tuple[float, bool]:
    server, pty = serve(chip, dump)
    try:
        started = time.monotonic()
        result = subprocess.run(
            [part.replace("PTY", pty) for part in command], capture_output=True, timeout=900
        )
        return time.monotonic() - started, result.returncode == 0
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=200 * 1024)
    parser.add_argument("--chips", default=",".join(CHIPS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for chip in args.chips.split(","):
            base, start, sp, flags = CHIPS[chip]
            image = Path(tmp) / f"{chip}.bin"
            body = random.Random(3).randbytes(args.size - 8)
            image.write_bytes(struct.pack("<II", sp, start + 0x101) + body)
            link, work = limit(chip, args.size)
            print(f"{chip}: {args.size} bytes at {start:#x}, USB-CDC at 64,000 bytes/s")
            print(f"  limit    {link + work:7.2f} s (link {link:.2f} s + chip {work:.2f} s)")
            tools = {
                "flashsh": [
                    sys.executable, "-m", "flashsh", "--protocol", "samba",
                    "-c", f"program {image} verify", "PTY",
                ],
            }  # fmt: skip
            if shutil.which("bossac"):
                tools["bossac"] = ["bossac", "-p", "PTY", "-U", *flags, str(image)]
            for name, command in tools.items():
                dump = Path(tmp) / f"{chip}-{name}.dump"
                took, ok = run(command, chip, dump)
                data = dump.read_bytes() if dump.exists() else b""
                lands = data[start - base : start - base + args.size] == image.read_bytes()
                state = "flash matches" if ok and lands else "FAILED"
                print(f"  {name:8} {took:7.2f} s ({took / (link + work):.2f}x the limit), {state}")


if __name__ == "__main__":
    main()
