"""Program + verify through the STM32 ROM DFU (DfuSe) at real speed: flashsh against a
plain DFU loop, the way dfu-util does it, on the same simulated device.

The simulated STM32F407 (``sim://dfuse?chip=stm32f407``, throttled) charges every
control transfer its full-speed frames (64-byte packets, 13 a 1 ms frame: a 2048-byte
DNLOAD or UPLOAD takes 3 ms, a GETSTATUS 1 ms) and takes the chip's typical times:
16 us a 32-bit word (8.2 ms a 2 KiB block, reported as 9 ms), 250/550/1000 ms a
16/64/128 KiB sector erase. The image is 256 KiB with a vector table, so sectors 0-5
are erased.

The limit: the image's bytes in wTransferSize (2048) blocks, once down and once up,
plus the poll times the chip reports for the erases and the block writes. Every
command also needs its DNLOAD and two GETSTATUS (1 ms each), which the limit leaves out.

* flashsh: ``program IMAGE verify`` in a session (the command's own time) and as a
  whole command line (``flashsh -c ... sim://dfuse?...``, start-up included); also with
  the pointer set for every block, as dfu-util does (DfuSe.use_block_numbers off).
* plain loop: what dfu-util 0.10 does for ``-s 0x08000000 -D`` (one ``41`` erase per
  sector the chunks touch, then Set Address + DNLOAD block 2 + GETSTATUS polling per
  2 KiB chunk) followed by what its upload does (Set Address, ABORT, UPLOAD blocks
  2, 3, ...), written here with pyusb against the same simulator.

    python benchmarks/dfuse.py [--size 262144] [--chip stm32f407]

Not a test.
"""

from __future__ import annotations

import argparse
import math
import random
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import usb.core

from flashsh import operations
from flashsh.images import load_image
from flashsh.protocols import usb_session_for
from flashsh.protocols.dfuse import DfuSe
from flashsh.session import Session
from flashsh.sims.usb_bus import SimUsbBackend, SimUsbBus, make_device
from flashsh.sims.usb_device import FRAME_S, PACKETS_PER_FRAME
from flashsh.transports.usb import open_usb

FLASH = 0x08000000
BLOCK = 2048
OUT, IN = 0x21, 0xA1
DNLOAD, UPLOAD, GETSTATUS, CLRSTATUS, ABORT = 1, 2, 3, 4, 6
DNBUSY, DNLOAD_IDLE, ERROR = 4, 5, 10


def transfer_s(nbytes: int) -> float:
    """A control transfer's time on the simulated full-speed bus."""
    packets = 2 + math.ceil(nbytes / 64)
    return math.ceil(packets / PACKETS_PER_FRAME) * FRAME_S


def limit(sim, size: int) -> tuple[float, float, float]:
    """(transfer seconds, reported poll seconds, total) for write + verify."""
    blocks = math.ceil(size / BLOCK)
    wire = 2 * blocks * transfer_s(BLOCK)
    chip = sim.chip
    write_ms = math.ceil(chip.program_ms(BLOCK)[0])
    erase_ms = sum(math.ceil(chip.erase_ms(u)[0]) for u in chip.units_for(FLASH, FLASH + size))
    polls = (blocks * write_ms + erase_ms) / 1000
    return wire, polls, wire + polls


def plug(url: str):
    bus = SimUsbBus()
    sim = make_device(url)
    bus.plug(sim)
    return bus, sim


Result = tuple[float, bool, int | None]  # seconds, flash matches, control transfers


def run_flashsh(url: str, image_path: Path, size: int) -> Result:
    bus, sim = plug(url)
    session = Session(usb_session_for(open_usb("usb:0483:df11", backend=SimUsbBackend(bus))))
    image = load_image(image_path, default_address=FLASH)
    before = sim.traffic.control
    started = time.monotonic()
    operations.program(session, image, verify=True)
    took = time.monotonic() - started
    session.close()
    return took, sim.flash[:size] == image_path.read_bytes(), sim.traffic.control - before


def run_cli(url: str, image_path: Path) -> Result:
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "flashsh", "-c", f"program {image_path} verify", url],
        capture_output=True,
        timeout=600,
    )
    return time.monotonic() - started, run.returncode == 0, None


class PlainLoop:
    """dfu-util's DfuSe download and upload, request by request."""

    def __init__(self, device) -> None:
        self.dev = device

    def status(self) -> tuple[int, int, int]:
        data = self.dev.ctrl_transfer(IN, GETSTATUS, 0, 0, 6, 5000)
        return data[0], data[1] | data[2] << 8 | data[3] << 16, data[4]

    def to_idle(self) -> None:
        status, _, state = self.status()
        if state == ERROR:
            self.dev.ctrl_transfer(OUT, CLRSTATUS, 0, 0, None, 5000)
            self.status()

    def command(self, payload: bytes) -> None:
        self.dev.ctrl_transfer(OUT, DNLOAD, 0, 0, payload, 5000)
        self.poll()

    def poll(self) -> None:
        while True:
            status, poll_ms, state = self.status()
            time.sleep(poll_ms / 1000)
            if state not in (DNBUSY,):
                break
        if status != 0:
            raise RuntimeError(f"status {status} in state {state}")

    def download(self, data: bytes, layout: list[tuple[int, int]]) -> None:
        last_erased = None
        for offset in range(0, len(data), BLOCK):
            address = FLASH + offset
            chunk_end = address + min(BLOCK, len(data) - offset)
            for lo, hi in layout:
                if lo < chunk_end and address < hi and lo != last_erased:
                    self.command(struct.pack("<BI", 0x41, max(lo, address)))
                    last_erased = lo
        for offset in range(0, len(data), BLOCK):
            self.command(struct.pack("<BI", 0x21, FLASH + offset))
            self.dev.ctrl_transfer(OUT, DNLOAD, 2, 0, data[offset : offset + BLOCK], 5000)
            self.poll()

    def upload(self, size: int) -> bytes:
        self.command(struct.pack("<BI", 0x21, FLASH))
        self.dev.ctrl_transfer(OUT, ABORT, 0, 0, None, 5000)
        self.status()
        out = bytearray()
        block = 2
        while len(out) < size:
            out += self.dev.ctrl_transfer(IN, UPLOAD, block, 0, min(BLOCK, size - len(out)), 5000)
            block += 1
        return bytes(out)


def run_plain(url: str, data: bytes) -> Result:
    bus, sim = plug(url)
    device = usb.core.find(idVendor=0x0483, idProduct=0xDF11, backend=SimUsbBackend(bus))
    device.set_interface_altsetting(0, 0)
    loop = PlainLoop(device)
    layout = [(u.address, u.end) for u in sim.chip.erase_units]
    before = sim.traffic.control
    started = time.monotonic()
    loop.to_idle()
    loop.download(data, layout)
    back = loop.upload(len(data))
    took = time.monotonic() - started
    return took, back == data and sim.flash[: len(data)] == data, sim.traffic.control - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256 * 1024)
    parser.add_argument("--chip", default="stm32f407")
    args = parser.parse_args()
    url = f"sim://dfuse?chip={args.chip}&throttle=1"
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "app.bin"
        body = random.Random(3).randbytes(args.size - 8)
        image.write_bytes(struct.pack("<II", 0x20020000, FLASH + 0x101) + body)
        _, sim = plug(url)
        wire, polls, total = limit(sim, args.size)
        blocks = math.ceil(args.size / BLOCK)
        print(f"{sim.rom_chip.name}: {args.size} bytes at 0x{FLASH:08x}, {blocks} blocks of "
              f"{BLOCK}, full-speed USB")  # fmt: skip
        print(f"  limit                   {total:6.2f} s (transfers {wire:.2f} s + reported poll "
              f"times {polls:.2f} s)")  # fmt: skip
        runs = {"flashsh (session)": lambda: run_flashsh(url, image, args.size)}
        runs["flashsh (command line)"] = lambda: run_cli(url, image)

        def per_block() -> Result:
            DfuSe.use_block_numbers = False
            try:
                return run_flashsh(url, image, args.size)
            finally:
                DfuSe.use_block_numbers = True

        runs["flashsh, pointer a block"] = per_block
        runs["plain DFU loop"] = lambda: run_plain(url, image.read_bytes())
        for name, run in runs.items():
            took, ok, transfers = run()
            state = "flash matches" if ok else "FAILED"
            count = f", {transfers} control transfers" if transfers is not None else ""
            print(f"  {name:26}{took:6.2f} s ({took / total:.2f}x the limit){count}, {state}")


if __name__ == "__main__":
    main()
