"""Program + verify on the STK500v2 simulators at real speed: flashsh vs avrdude.

1. Bootloader: a 128 KiB image through the Arduino Mega 2560 "wiring" bootloader
   (stk500boot_v2) at 115200 baud; avrdude ``-c wiring -D``.
2. ISP: 28 KiB onto an ATmega328P through an STK500 with v2 firmware at 115200 baud;
   avrdude ``-c stk500v2``, which erases the chip first, so flashsh runs
   ``mass_erase; program FILE verify`` to do the same work.

Each simulator is served on a pseudo-terminal, throttled to real time, and each tool gets
a fresh one. Prints the wall time of each tool, their ratio, and the limit: the bytes
both tools must move over the serial link, in both directions, with AVR068 framing, at
11,520 bytes/s, plus the chip's time (page writes; in ISP mode every SPI instruction at
the programmer's SCK clock).

    python benchmarks/stk500v2.py [--boot-size 131072] [--isp-size 28672]

Needs avrdude on PATH for the comparison (Debian package `avrdude`); without it only
flashsh's figures are printed. Not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flashsh.sims.stk500v2_isp import sck_hz

BAUD = 115200
WIRE_BYTES_PER_SECOND = BAUD / 10  # 8N1: ten bits a byte
FRAME = 6  # AVR068 framing around every body: start, sequence, two size bytes, token, checksum

# ---- the Mega 2560 bootloader
BOOT_PAGE = 256
# The simulator's SPM page erase + page write: 4.1 ms each (ATmega2560 datasheet, tWD_FLASH).
BOOT_PAGE_MS = 8.2

# ---- the ISP programmer
ISP_PAGE = 128  # ATmega328P flash page
# PARAM_SCK_DURATION 2 is 115.2 kHz on an STK500, the firmware's default. Neither tool is
# told to change it here: avrdude only sets it with -B, flashsh only lowers it above
# 125 kHz. The benchmark checks that in the simulator's log.
SCK_DURATION = 2
# The target's ISP page write (avrdude.conf min_write_delay for the 328P flash).
ISP_PAGE_MS = 4.5
ISP_INSTRUCTION = 4  # SPI bytes per serial-programming instruction


def message(body: int) -> int:
    """Bytes on the wire for a message carrying ``body`` bytes."""
    return body + FRAME


# Every page both tools move, one request/answer pair after another (sizes from
# /work/shared/protocols/stk500v2.md A6/A7): LOAD_ADDRESS `06 a a a a` -> `06 00`, then
# PROGRAM_FLASH_ISP with its 10-byte header -> `13 00`, or READ_FLASH_ISP `14 n n 20` ->
# `14 00 data 00`. Both read back in page-sized blocks (256 bytes on the 2560, 128 on
# the 328P) with a LOAD_ADDRESS before each.
LOAD_ADDRESS_WIRE = message(5) + message(2)


def write_page_wire(page: int) -> int:
    return LOAD_ADDRESS_WIRE + message(10 + page) + message(2)


def read_block_wire(block: int) -> int:
    return LOAD_ADDRESS_WIRE + message(4) + message(block + 3)


class PtySim:
    """An STK500v2 simulator on a pseudo-terminal, throttled to real time; its log
    (``-v``) goes to a file so that the clock settings each tool made can be read."""

    def __init__(self, options: list[str], log: Path) -> None:
        cmd = [sys.executable, "-m", "flashsh.sims", "stk500v2", "--throttle", "1", "-v"]
        for option in options:
            cmd += ["-o", option]
        self.log = log
        self._err = log.open("w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._err, text=True)
        self.path = self.proc.stdout.readline().strip()

    def close(self) -> str:
        """Stop the simulator; return its log."""
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self._err.close()
        return self.log.read_text()


def timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed:\n{done.stdout}\n{done.stderr}")
    return elapsed, done


def run_flashsh(pty: str, commands: str) -> tuple[float, dict[str, dict]]:
    """Wall time and the JSON result of each command, by command name."""
    cmd = [sys.executable, "-m", "flashsh", "--json", "--yes", "--protocol", "stk500v2"]
    elapsed, done = timed([*cmd, "-c", commands, pty])
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return elapsed, {r["command"]: r["result"] for r in results}


def run_avrdude(pty: str, args: list[str]) -> float:
    # -q -q: no progress bars. avrdude also complains that a pty has no modem lines.
    return timed(["avrdude", "-q", "-q", "-P", pty, *args])[0]


def with_sim(options: list[str], log: Path, action):
    sim = PtySim(options, log)
    try:
        result = action(sim.path)
    finally:
        text = sim.close()
    return result, text


def sck_changes(log: str) -> str:
    """What the simulated programmer logged about SET_PARAMETER SCK_DURATION."""
    changes = [line.split("programmer: ", 1)[1] for line in log.splitlines() if "SCK" in line]
    return ", ".join(changes) if changes else "left as it was"


def bootloader(size: int, tmp: Path, have_avrdude: bool) -> None:
    data = random.Random(2560).randbytes(size)
    image = tmp / "mega.bin"
    image.write_bytes(data)
    pages = -(-size // BOOT_PAGE)
    wire = pages * (write_page_wire(BOOT_PAGE) + read_block_wire(BOOT_PAGE))
    serial = wire / WIRE_BYTES_PER_SECOND
    chip = pages * BOOT_PAGE_MS / 1000
    limit = serial + chip
    options = ["mode=bootloader", f"baud={BAUD}", f"page_ms={BOOT_PAGE_MS}"]
    log = tmp / "sim.log"

    print(
        f"1. Mega 2560 wiring bootloader: {size} bytes = {pages} pages of {BOOT_PAGE}; "
        f"link {BAUD} baud 8N1; page erase + write {BOOT_PAGE_MS} ms"
    )
    print(
        f"link limit for write + verify: {limit:.2f} s = {wire} bytes on the wire "
        f"({write_page_wire(BOOT_PAGE)} + {read_block_wire(BOOT_PAGE)} a page) in "
        f"{serial:.2f} s + {chip:.2f} s of page writes"
    )
    (total, results), _ = with_sim(
        options, log, lambda pty: run_flashsh(pty, f"program {image} verify")
    )
    op = results["program"]["seconds"]
    print(
        f"flashsh program+verify: {total:.2f} s in all, {op:.2f} s transferring "
        f"({op / limit * 100 - 100:+.1f}% against the limit)"
    )
    if have_avrdude:
        args = ["-p", "m2560", "-c", "wiring", "-b", str(BAUD), "-D", "-U", f"flash:w:{image}:r"]
        t_avrdude, _ = with_sim(options, log, lambda pty: run_avrdude(pty, args))
        print(
            f"avrdude program+verify: {t_avrdude:.2f} s in all "
            f"(flashsh is {t_avrdude / total:.2f}x as fast)"
        )


def isp(size: int, tmp: Path, have_avrdude: bool) -> None:
    data = random.Random(328).randbytes(size)
    image = tmp / "uno.bin"
    image.write_bytes(data)
    pages = -(-size // ISP_PAGE)
    sck = sck_hz(SCK_DURATION)
    instruction_s = ISP_INSTRUCTION * 8 / sck
    # The programmer polls RDY/BSY after Write Program Memory Page, one instruction at a
    # time, until the target is ready: the page write rounded up to whole polls.
    polls = math.ceil(ISP_PAGE_MS / 1000 / instruction_s)
    # Per page: Load Program Memory Page for every byte, Write Page, the polls; then a
    # Read Program Memory for every byte on verify.
    instructions = pages * (ISP_PAGE + 1 + polls + ISP_PAGE)
    spi = instructions * instruction_s
    wire = pages * (write_page_wire(ISP_PAGE) + read_block_wire(ISP_PAGE))
    serial = wire / WIRE_BYTES_PER_SECOND
    # Two pipes: the serial link and the SPI link to the target. A programmer that moved
    # the next message while clocking the last one out to the target would be bound by
    # the slower of the two, max(serial, spi). The simulated STK500, like the real
    # firmware, takes in a whole message, then runs its SPI instructions, then sends the
    # answer, and its UART (two bytes and the shift register) overruns if the host sends
    # meanwhile: the pipes never overlap, so what a host can reach is their sum.
    overlapped = max(serial, spi)
    limit = serial + spi
    options = [
        "mode=isp",
        "chip=atmega328p",
        f"baud={BAUD}",
        f"sck={SCK_DURATION}",
        f"page_ms={ISP_PAGE_MS}",
    ]
    log = tmp / "sim.log"

    print(
        f"2. STK500v2 ISP programmer, ATmega328P: {size} bytes = {pages} pages of {ISP_PAGE}; "
        f"link {BAUD} baud 8N1; SCK {sck / 1000:.1f} kHz (duration {SCK_DURATION}), "
        f"{instruction_s * 1e6:.0f} us an instruction; page write {ISP_PAGE_MS} ms "
        f"({polls} RDY/BSY polls)"
    )
    print(
        f"serial link: {wire} bytes ({write_page_wire(ISP_PAGE)} + {read_block_wire(ISP_PAGE)} "
        f"a page) = {serial:.2f} s; SPI: {instructions} instructions = {spi:.2f} s"
    )
    print(
        f"limit for write + verify: {limit:.2f} s (serial + SPI, one after the other as the "
        f"programmer works); {overlapped:.2f} s if they overlapped"
    )
    print("both tools erase the chip first: flashsh runs `mass_erase; program FILE verify`")
    commands = f"mass_erase; program {image} verify"
    (total, results), log_text = with_sim(options, log, lambda pty: run_flashsh(pty, commands))
    op = results["program"]["seconds"]
    erase = results["mass_erase"]["seconds"]
    clock = results["connect"]["details"].get("isp_clock", "not reported")
    print(f"flashsh ISP clock: {clock}; SCK_DURATION {sck_changes(log_text)}")
    print(
        f"flashsh erase+program+verify: {total:.2f} s in all, {erase:.2f} s erasing, "
        f"{op:.2f} s transferring ({op / limit * 100 - 100:+.1f}% against the limit)"
    )
    if have_avrdude:
        args = ["-p", "m328p", "-c", "stk500v2", "-b", str(BAUD), "-U", f"flash:w:{image}:r"]
        t_avrdude, log_text = with_sim(options, log, lambda pty: run_avrdude(pty, args))
        print(f"avrdude ISP clock: SCK_DURATION {sck_changes(log_text)}")
        print(
            f"avrdude erase+program+verify: {t_avrdude:.2f} s in all "
            f"(flashsh is {t_avrdude / total:.2f}x as fast)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boot-size", type=int, default=128 * 1024)
    parser.add_argument("--isp-size", type=int, default=28 * 1024)
    args = parser.parse_args()
    have_avrdude = shutil.which("avrdude") is not None
    with tempfile.TemporaryDirectory() as tmp:
        bootloader(args.boot_size, Path(tmp), have_avrdude)
        print()
        isp(args.isp_size, Path(tmp), have_avrdude)
    if not have_avrdude:
        print("\navrdude not found: install it to compare")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
