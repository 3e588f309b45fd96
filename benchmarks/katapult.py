"""Katapult over CAN: blocks per second and bytes per second against the bus limit.

flashsh programs and verifies an image on a simulated Katapult node (``sim://can``,
default MCU stm32f103xe: 1 KiB pages, 20 ms typical page erase, 52.5 us per half-word)
at 500 kbit/s and 1 Mbit/s, in real time. The simulator gives every frame its time on
the wire (47 bits + 8 per data byte + worst-case stuff bits) one after another on a single
bus clock, so no host can beat:

* writing: per 64-byte block, the SEND_BLOCK frame (76 bytes = 10 CAN frames), its ACK
  (16 bytes = 2 frames) and the chip's programming time, plus one page erase per page
  (the node starts with an older image, so every page needs one);
* reading back: REQUEST_BLOCK (12 bytes = 2 frames) and its ACK (80 bytes = 10 frames).

"waiting" is the time per block between the host's last frame of a request and the ACK's
last frame: what a stop-and-wait host pays for each acknowledgement (the ACK's frames and
the chip's work included). A serial run at 250000 baud on the UART simulator is printed
for comparison; with ``--flashtool PATH`` (Katapult's scripts/flashtool.py, which you
have) the same image is also sent by it over a pseudo-terminal.

    python benchmarks/katapult.py [--size 65536] [--bitrates 500000,1000000]

Not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flashsh import operations
from flashsh.images import load_image
from flashsh.protocols import ProbeOptions
from flashsh.session import Session
from flashsh.sims.can_bus import frame_time
from flashsh.sims.katapult_flash import mcu_by_name
from flashsh.transports.can import CanOptions

UUID = "aabbccddeeff"
BLOCK = 64
MCU = "stm32f103xe"


def frames_time(size: int, bitrate: int) -> float:
    """Time the bytes of one Katapult frame take, cut into 8-byte CAN frames."""
    full, rest = divmod(size, 8)
    return full * frame_time(8, bitrate) + (frame_time(rest, bitrate) if rest else 0.0)


def limits(size: int, bitrate: int) -> tuple[float, float, float]:
    """(write, verify, chip) seconds no host can beat for ``size`` bytes."""
    mcu = mcu_by_name(MCU)
    blocks = -(-size // BLOCK)
    page = mcu.pages(mcu.flash_size)(0x08002000)
    pages = -(-size // page)
    chip = blocks * mcu.block_program_s() + pages * mcu.erase_ms[page] / 1000
    write = blocks * (frames_time(76, bitrate) + frames_time(16, bitrate)) + chip
    verify = blocks * (frames_time(12, bitrate) + frames_time(80, bitrate))
    return write, verify, chip


def measure(path: Path, old: Path, bitrate: int) -> dict[str, float]:
    # The node holds an older firmware, so every page is erased on the way, as when
    # updating Klipper.
    url = f"sim://can?node=katapult:{UUID},image={old}&bitrate={bitrate}"
    session = Session.open(UUID, ProbeOptions(can=CanOptions(channel=url)))
    try:
        image = load_image(path, default_address=session.memory_map.app_start)
        started = time.monotonic()
        operations.program(session, image)
        written = time.monotonic()
        operations.verify_image(session, image)
        verified = time.monotonic()
        # One request alone, to see the round trip a block costs.
        flash = session.memory_map.flash
        waits = []
        for address in range(image.start, image.start + 32 * BLOCK, BLOCK):
            t = time.monotonic()
            session.bootloader.read(flash, address, BLOCK)
            waits.append(time.monotonic() - t)
    finally:
        session.close()
    return {
        "write": written - started,
        "verify": verified - written,
        "read_round_trip": sum(waits) / len(waits),
    }


def flashtool_serial(flashtool: str, path: Path, old: Path) -> float | None:
    """flashtool.py -d PTY against the UART simulator at 250000 baud."""
    server = subprocess.Popen(
        [sys.executable, "-m", "flashsh.sims", "katapult", "-o", "link=uart", "--image", str(old)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        pty = server.stdout.readline().strip()
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, flashtool, "-d", pty, "-b", "250000", "-f", str(path)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        took = time.monotonic() - started
        return took if result.returncode == 0 else None
    finally:
        server.terminate()
        server.wait()


def flashsh_serial(path: Path, old: Path) -> float:
    started = time.monotonic()
    subprocess.run(
        [
            sys.executable, "-m", "flashsh", "--protocol", "katapult", "-c",
            f"program {path} verify reset", f"sim://katapult?link=uart&image={old}",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=32768, help="image bytes (32768)")
    parser.add_argument("--bitrates", default="500000,1000000")
    parser.add_argument("--flashtool", help="path to Katapult's scripts/flashtool.py")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "klipper.bin"
        path.write_bytes(random.Random(7).randbytes(args.size))
        old = Path(tmp) / "old.bin"
        old.write_bytes(random.Random(8).randbytes(args.size))
        blocks = -(-args.size // BLOCK)
        print(f"Katapult over CAN, {MCU}, {args.size} bytes = {blocks} blocks of {BLOCK}")
        print(
            f"{'bitrate':>9} {'phase':>7} {'limit s':>8} {'flashsh s':>9} {'x limit':>7} "
            f"{'blocks/s':>8} {'bytes/s':>8} {'ms/block':>8}"
        )
        for bitrate in (int(b) for b in args.bitrates.split(",")):
            write_limit, verify_limit, chip = limits(args.size, bitrate)
            got = measure(path, old, bitrate)
            for phase, limit in (("write", write_limit), ("verify", verify_limit)):
                took = got[phase]
                print(
                    f"{bitrate:>9} {phase:>7} {limit:8.2f} {took:9.2f} {took / limit:7.2f} "
                    f"{blocks / took:8.0f} {args.size / took:8.0f} {1000 * took / blocks:8.2f}"
                )
            request = frames_time(12, bitrate)
            print(
                f"{'':>9} one REQUEST_BLOCK round trip {1000 * got['read_round_trip']:.2f} ms, "
                f"of which the request's own frames {1000 * request:.2f} ms and waiting for "
                f"the ACK {1000 * (got['read_round_trip'] - request):.2f} ms "
                f"(its 10 frames alone: {1000 * frames_time(80, bitrate):.2f} ms); "
                f"chip time in the write limit {chip:.2f} s"
            )
        print()
        print("Katapult over a UART at 250000 baud, simulated (program + verify + start)")
        # Each block: SEND_BLOCK 76 + ACK 16 + REQUEST_BLOCK 12 + ACK 80 bytes, 10 bits each,
        # one after another (stop and wait), plus the chip's time.
        wire = blocks * (76 + 16 + 12 + 80) * 10 / 250000
        print(f"  limit        {wire + limits(args.size, 1)[2]:6.2f} s (line {wire:.2f} s + chip)")
        print(f"  flashsh      {flashsh_serial(path, old):6.2f} s (a new process each)")
        if args.flashtool:
            took = flashtool_serial(args.flashtool, path, old)
            print(f"  flashtool.py {took:6.2f} s" if took else "  flashtool.py failed")


if __name__ == "__main__":
    main()
