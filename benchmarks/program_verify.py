"""Program + verify a 28 KiB image on the pty simulator at 115200 baud: flashsh vs avrdude.

Prints the wall time of each tool, their ratio, and the link's limit: the bytes that must
cross the wire for write + verify (STK500v1 framing, one page per command) at 11,520 B/s,
plus the chip's page erase/write time. Then a re-flash that changes a few pages: avrdude
write+verify against flashsh `program FILE diff verify`.

    python benchmarks/program_verify.py [--size 28672] [--changed-pages 3] [--runs 1]

Needs avrdude on PATH for the comparison (Debian package `avrdude`); without it only
flashsh's figures are printed. Not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flashsh.images import save_image

BAUD = 115200
WIRE_BYTES_PER_SECOND = BAUD / 10  # 8N1: ten bits a byte
PAGE = 128  # ATmega328P flash page
# The simulator's page erase + page write time: optiboot 8.x erases, then writes, each
# taking up to 4.1 ms on an ATmega328P (datasheet, tWD_FLASH).
PAGE_WRITE_S = 0.0082
# STK500v1 bytes per page, both directions: LOAD_ADDRESS (4 + 2) and PROG_PAGE (page + 5 + 2)
WRITE_PAGE_WIRE = 4 + 2 + PAGE + 5 + 2
# LOAD_ADDRESS (4 + 2) and READ_PAGE (5 + page + 2)
READ_PAGE_WIRE = 4 + 2 + 5 + PAGE + 2


class PtySim:
    """The STK500v1 simulator on a pseudo-terminal, throttled to the real baud rate."""

    def __init__(self, image: Path | None = None) -> None:
        cmd = [
            sys.executable,
            "-m",
            "flashsh.sims",
            "stk500v1",
            "--chip",
            "atmega328p",
            "--baud",
            str(BAUD),
            "--throttle",
            "1",
            "-o",
            f"page_ms={PAGE_WRITE_S * 1000}",
        ]
        if image is not None:
            cmd += ["--image", str(image)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        self.path = self.proc.stdout.readline().strip()

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed:\n{done.stdout}\n{done.stderr}")
    return elapsed, done


def avrdude(pty: str, hexfile: Path) -> float:
    cmd = [
        "avrdude",
        "-q",
        "-q",
        "-p",
        "m328p",
        "-c",
        "arduino",
        "-P",
        pty,
        "-b",
        str(BAUD),
        "-D",
        "-U",
        f"flash:w:{hexfile}:i",
    ]
    return timed(cmd)[0]


def flashsh(pty: str, hexfile: Path, words: str) -> tuple[float, dict]:
    cmd = [
        sys.executable,
        "-m",
        "flashsh",
        "--json",
        "--protocol",
        "stk500v1",
        "--baud",
        str(BAUD),
        "-c",
        f"program {hexfile} {words}",
        pty,
    ]
    elapsed, done = timed(cmd)
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return elapsed, results[-1]["result"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=28 * 1024)
    parser.add_argument("--changed-pages", type=int, default=3)
    args = parser.parse_args()
    have_avrdude = shutil.which("avrdude") is not None
    rng = random.Random(2026)
    data = bytes(rng.randrange(256) for _ in range(args.size))
    pages = -(-args.size // PAGE)
    limit = pages * (WRITE_PAGE_WIRE + READ_PAGE_WIRE) / WIRE_BYTES_PER_SECOND
    limit += pages * PAGE_WRITE_S

    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "image.hex"
        save_image(image, 0, data)
        changed = bytearray(data)
        for index in rng.sample(range(pages), args.changed_pages):
            changed[index * PAGE] ^= 0xFF
        changed_image = Path(tmp) / "changed.hex"
        save_image(changed_image, 0, bytes(changed))
        old = Path(tmp) / "old.bin"
        old.write_bytes(data)

        print(
            f"image: {args.size} bytes = {pages} pages of {PAGE}; link {BAUD} baud 8N1; "
            f"page write {PAGE_WRITE_S * 1000:.1f} ms"
        )
        print(
            f"link limit for write + verify: {limit:.2f} s "
            f"({pages * (WRITE_PAGE_WIRE + READ_PAGE_WIRE)} bytes on the wire)"
        )

        sim = PtySim()
        try:
            total, result = flashsh(sim.path, image, "verify")
        finally:
            sim.close()
        op = result["seconds"]
        print(
            f"flashsh program+verify: {total:.2f} s in all, {op:.2f} s transferring "
            f"({op / limit * 100 - 100:+.1f}% against the limit)"
        )
        if have_avrdude:
            sim = PtySim()
            try:
                t_avrdude = avrdude(sim.path, image)
            finally:
                sim.close()
            print(
                f"avrdude program+verify: {t_avrdude:.2f} s in all "
                f"(flashsh is {t_avrdude / total:.2f}x as fast)"
            )

        print(f"\nre-flash with {args.changed_pages} changed pages:")
        sim = PtySim(old)
        try:
            total_diff, result = flashsh(sim.path, changed_image, "diff verify")
        finally:
            sim.close()
        print(
            f"flashsh program diff verify: {total_diff:.2f} s in all, "
            f"{result['pages_written']} pages written"
        )
        if have_avrdude:
            sim = PtySim(old)
            try:
                t_avrdude = avrdude(sim.path, changed_image)
            finally:
                sim.close()
            print(
                f"avrdude write+verify: {t_avrdude:.2f} s "
                f"(flashsh diff is {t_avrdude / total_diff:.2f}x as fast)"
            )
        else:
            print("avrdude not found: install it to compare")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
