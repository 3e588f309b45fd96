"""Program + verify on the simulated STM32 ROM bootloader at real speed: stm32flash vs
flashsh.

The simulator (``sim://stm32``, default chip STM32F103RC: F1 high density, 256 KiB of
2 KiB pages, Erase 0x43) is served on a pseudo-terminal from this process, throttled to
real time: 115200 baud with 8E1's 11 bits a byte, the datasheet's typical page erase
(20 ms) and half-word programming (52.5 us) times. Each tool gets a fresh simulator:

* ``stm32flash -m 8n1 -b 115200 -w IMAGE -v PTY`` (a pty cannot carry parity; the
  simulator times the bytes as 8E1 all the same);
* ``python -m flashsh --protocol stm32 -c "program IMAGE verify" PTY``.

The limit is what write + verify must cost on this link: the AN3155 exchanges for 256-byte
blocks (Write Memory, then Read Memory of the same block), the start-up commands and the
page erase, every byte in both directions at 10,473 bytes/s (115200 / 11), plus the
chip's time to erase those pages and program every half-word. The bytes each tool really
moved are counted from what the simulated ROM carried out.

    python benchmarks/stm32.py [--chip stm32f103rc] [--sizes 65536,262144]

Needs stm32flash on PATH (Debian package ``stm32flash``) for its figures; flashsh's are
printed when its STM32 protocol runs. Not a test: nothing here passes or fails.
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
import threading
import time
from pathlib import Path

from flashsh.chips.stm32 import Stm32Chip
from flashsh.sims.pty import PtyServer
from flashsh.sims.stm32 import Stm32Sim

BAUD = 115200
BITS_8E1 = 11
WIRE_BYTES_PER_SECOND = BAUD / BITS_8E1
BLOCK = 256  # the largest Write/Read Memory block (AN3155 §3.4, §3.6)


# ---------------------------------------------------------------------- bytes on the wire
# Both directions counted. A command is its code and complement (2) and an ACK (1); an
# address is 4 bytes and a checksum (5) and an ACK (1).


def sync_bytes() -> int:
    return 2  # 7F, ACK


def get_bytes(chip: Stm32Chip) -> int:
    return 3 + 1 + 1 + len(chip.commands) + 1  # N, version, the codes, ACK


def read_bytes(n: int) -> int:
    return 3 + 6 + 2 + 1 + n  # length and complement, ACK, the data


def write_bytes(n: int) -> int:
    return 3 + 6 + 1 + n + 1 + 1  # N, data, checksum, ACK


def erase_bytes(chip: Stm32Chip, pages: int, mass: bool) -> int:
    if chip.extended_erase:
        return 3 + (3 if mass else 2 + 2 * pages + 1) + 1
    return 3 + (2 if mass else 1 + pages + 1) + 1


def step_bytes(chip: Stm32Chip, step: tuple) -> int:
    """Bytes on the wire for one command the simulated ROM carried out."""
    code = step[0]
    if code == 0x00:
        return get_bytes(chip)
    if code in (0x01, 0x02):
        return 3 + 4  # Get Version: version + 2 option bytes + ACK; Get ID: N + PID + ACK
    if code == 0x11:
        return read_bytes(step[2])
    if code == 0x31:
        return write_bytes(step[2])
    if code in (0x43, 0x44):
        mass = step[1] == "mass"
        return erase_bytes(chip, 0 if mass else len(step[1]), mass)
    if code == 0x21:
        return 3 + 6
    return 3 + 1  # protection commands: two ACKs


def limit(chip: Stm32Chip, size: int) -> tuple[int, float, float, int]:
    """(bytes on the wire, their time, the chip's erase + program time, pages erased)
    for write + verify of ``size`` bytes at the flash base."""
    blocks = [min(BLOCK, size - at) for at in range(0, size, BLOCK)]
    units = chip.units_for(chip.flash_base, chip.flash_base + size)
    wire = sync_bytes() + 2 * 7 + get_bytes(chip)  # 7F, Get Version, Get ID, Get
    wire += erase_bytes(chip, len(units), mass=False)
    # Write pads each block to a multiple of 4; the verify reads the real bytes.
    wire += sum(write_bytes(-(-n // 4) * 4) + read_bytes(n) for n in blocks)
    erase = sum(chip.erase_ms(u)[0] for u in units) / 1000
    program = sum(chip.program_ms(-(-n // 4) * 4)[0] for n in blocks) / 1000
    return wire, wire / WIRE_BYTES_PER_SECOND, erase + program, len(units)


# ---------------------------------------------------------------------- running the tools


class ServedSim:
    """A fresh real-time Stm32Sim on a pty, served from a thread of this process."""

    def __init__(self, chip: str) -> None:
        options = {"chip": [chip], "throttle": ["1"]}
        self.sim = Stm32Sim.from_options(options, host_baud=None)
        self.server = PtyServer(self.sim, reset_on_open=False)
        self.path = self.server.path
        self.thread = threading.Thread(target=self.server.serve, daemon=True)
        self.thread.start()
        # The ROM listens once the chip is out of reset; a 0x7F before that is lost.
        assert self.sim.mcu.wait_for_state("bootloader")

    def close(self) -> None:
        self.server.stop()
        self.thread.join(2)
        self.server.close()

    def wire_bytes(self) -> int:
        chip = self.sim.chip
        return sync_bytes() + sum(step_bytes(chip, s) for s in self.sim.rom.history)


def timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    return time.perf_counter() - start, done


def run_stm32flash(chip: str, image: Path) -> tuple[float, ServedSim]:
    served = ServedSim(chip)
    try:
        cmd = ["stm32flash", "-m", "8n1", "-b", str(BAUD), "-w", str(image), "-v", served.path]
        elapsed, done = timed(cmd)
        if done.returncode != 0:
            raise SystemExit(f"stm32flash failed:\n{done.stdout}\n{done.stderr}")
        return elapsed, served
    finally:
        served.close()


def run_flashsh(chip: str, image: Path) -> tuple[float, float | None, ServedSim] | str:
    """(wall time, the program command's own seconds, the sim) or why it did not run."""
    served = ServedSim(chip)
    try:
        cmd = [sys.executable, "-m", "flashsh", "--json", "--yes", "--protocol", "stm32"]
        elapsed, done = timed([*cmd, "-c", f"program {image} verify", served.path])
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            return lines[-1] if lines else f"exit status {done.returncode}"
        results = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
        program = next((r for r in results if r.get("command") == "program"), None)
        seconds = program["result"].get("seconds") if program else None
        return elapsed, seconds, served
    finally:
        served.close()


def bench(chip_name: str, size: int, tmp: Path, have_stm32flash: bool) -> None:
    image = tmp / f"img{size}.bin"
    data = random.Random(size).randbytes(size)
    image.write_bytes(data)
    chip = Stm32Sim(chip=chip_name, throttle=0).chip
    wire, wire_s, chip_s, pages = limit(chip, size)
    total = wire_s + chip_s
    print(
        f"{chip.name}: {size} bytes = {-(-size // BLOCK)} blocks of {BLOCK}, {pages} pages "
        f"erased; link {BAUD} baud 8E1 ({WIRE_BYTES_PER_SECOND:,.0f} bytes/s)"
    )
    print(
        f"link limit for write + verify: {total:.2f} s = {wire} bytes on the wire in "
        f"{wire_s:.2f} s + {chip_s:.2f} s of page erase and programming"
    )
    if have_stm32flash:
        elapsed, served = run_stm32flash(chip_name, image)
        ok = served.sim.flash[:size] == data
        print(
            f"stm32flash -w -v: {elapsed:.2f} s in all ({elapsed / total * 100 - 100:+.1f}% "
            f"against the limit), {served.wire_bytes()} bytes on the wire, "
            f"flash {'matches' if ok else 'DIFFERS'}"
        )
    else:
        elapsed = None
    result = run_flashsh(chip_name, image)
    if isinstance(result, str):
        print(f"flashsh program verify: did not run ({result})")
        return
    f_elapsed, op, served = result
    ok = served.sim.flash[:size] == data
    transfer = f", {op:.2f} s in the program command" if op is not None else ""
    print(
        f"flashsh program verify: {f_elapsed:.2f} s in all{transfer} "
        f"({f_elapsed / total * 100 - 100:+.1f}% against the limit), "
        f"{served.wire_bytes()} bytes on the wire, flash {'matches' if ok else 'DIFFERS'}"
    )
    if elapsed is not None:
        print(f"stm32flash / flashsh: flashsh is {elapsed / f_elapsed:.2f}x as fast")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chip", default="stm32f103rc")
    parser.add_argument("--sizes", default="65536,262144")
    args = parser.parse_args()
    have_stm32flash = shutil.which("stm32flash") is not None
    with tempfile.TemporaryDirectory() as tmp:
        for n, size in enumerate(int(s, 0) for s in args.sizes.split(",")):
            if n:
                print()
            bench(args.chip, size, Path(tmp), have_stm32flash)
    if not have_stm32flash:
        print("\nstm32flash not found: install it to compare")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
