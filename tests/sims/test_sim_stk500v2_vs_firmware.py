"""The Mega 2560 bootloader model against the real thing: the same raw messages go to the
shipped stk500boot_v2_mega2560.hex running in simavr (tests/harness) and to the
simulator on a pty, and every answer must be the same bytes.

The script covers what a test double must get right: sign-on and parameters, the fake
fuse answers of SPI_MULTI, unsupported commands, chip erase, the sequential erase
pointer, extended addresses, the EEPROM read bug, bad checksums and the monitor.

simavr does not model reading fuses with LPM: the bootloader gets flash bytes 0 to 3
instead (low fuse = byte 0, lock = 1, extended = 2, high = 3). The applications here
start with four 0xFF bytes and the simulator is given fuses and lock bits of 0xFF.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import serial
from harness.avrsim import AvrSim
from harness.build import HarnessUnavailable, build_avr_pty
from harness.firmware import Bootloader

from flashsh.sims import sim_class
from flashsh.sims.pty import PtyServer
from flashsh.sims.stk500v2_frame import frame, read_message
from flashsh.sims.url import parse_sim_url

pytestmark = pytest.mark.debian

HEX = Path(
    "/usr/share/arduino/hardware/arduino/avr/bootloaders/stk500v2/stk500boot_v2_mega2560.hex"
)
# Where the shipped build keeps its monitor texts, as 16-bit addresses (the monitor reads
# them from the lower 64 KiB of flash).
TEXTS = {0xE2D5: b"Huh?", 0xE2DA: b"Bootloader>", 0xE2E6: b"Arduino explorer stk500V2 by MLS"}


def mega2560() -> Bootloader:
    if not HEX.exists():
        pytest.skip(f"{HEX} missing (arduino-core-avr)")
    return Bootloader(
        "stk500v2_mega2560", HEX, "atmega2560", "m2560", 16_000_000, 115200,
        0x3E000, 0x40000, 256, bytes.fromhex("1e9801"),
    )  # fmt: skip


@pytest.fixture
def boards(tmp_path):
    """boards(app) -> (real pty, simulated pty), both with ``app`` in flash."""
    try:
        binary = build_avr_pty()
    except HarnessUnavailable as exc:
        pytest.skip(f"simulator harness unavailable: {exc}")
    started: list = []

    def start(app: bytes) -> tuple[str, str]:
        path = tmp_path / f"app{len(started)}.bin"
        path.write_bytes(app)
        real = AvrSim(mega2560(), tmp_path / f"real{len(started)}", app=path, binary=binary)
        started.append(real.start())
        query = f"fuses=ff:ff:ff&lock=ff&image={path}"
        protocol, options = parse_sim_url("sim://stk500v2?" + query)
        server = PtyServer(sim_class(protocol).from_options(options, host_baud=None))
        threading.Thread(target=server.serve, daemon=True).start()
        started.append(server)
        assert real.pty is not None
        return real.pty, server.path

    yield start
    for item in started:
        if isinstance(item, AvrSim):
            item.__exit__(None, None, None)
        else:
            item.close()


def exchange(port: serial.Serial, seq: int, body: bytes) -> bytes:
    """Send one message; return the answer message as bytes (b"" for none)."""
    port.write(frame(seq, body))
    answer = read_message(port, 0.6)
    return b"" if answer is None else frame(answer.seq, answer.body)


def script() -> list[tuple[int, bytes]]:
    page = bytes((i * 7 + 1) & 0xFF for i in range(256))
    steps = [
        "01", "03 90", "03 91", "03 92", "03 94", "03 80", "02 98 05",
        "10 c8 64 19 20 00 53 03 ac 53 00 00",
        "1b 04 30 00 00 00", "1b 04 30 00 01 00", "1b 04 30 00 02 00",
        "18 04 50 00 00 00", "18 04 58 08 00 00", "18 04 50 08 00 00", "1a 04 58 00 00 00",
        "1d 04 04 00 30 00 01 00", "1d 04 04 00 50 08 00 00", "1d 04 04 00 58 00 00 00",
        "1d 04 01 03 20 00 00 00", "04", "05", "17 ac a0 00 ff", "1c 04 38 00 00 00", "7f",
        "12 09 00 ac 80 00 00",
    ]  # fmt: skip
    out = [bytes.fromhex(s) for s in steps]
    header = bytes.fromhex("13 01 00 c1 0a 40 4c 20 00 00")
    other = bytes(b ^ 0x5A for b in page)
    # Pages 0, 1, 2, page 1 again (on top of itself: erases page 3 instead, B4), and one
    # above 128 KiB (erases page 4, lands on erased flash).
    writes = [(0x80000000, page), (0x80000080, page), (0x80000100, page)]
    writes += [(0x80000080, other), (0x80010000, other)]
    for word, data in writes:
        out.append(b"\x06" + word.to_bytes(4, "big"))
        out.append(header + data)
    for word in (0x80000000, 0x80000080, 0x80000100, 0x80000180, 0x80010000, 0x00010000):
        out.append(b"\x06" + word.to_bytes(4, "big"))
        out.append(bytes.fromhex("14 01 00 20"))
    out += [
        bytes.fromhex("06 00 00 00 10"),
        bytes.fromhex("15 00 08 c1 14 c1 c2 a0 00 00") + bytes(range(0x40, 0x48)),
        bytes.fromhex("06 00 00 00 10"),
        bytes.fromhex("16 00 08 a0"),
        bytes.fromhex("06 00 00 00 08"),
        bytes.fromhex("16 00 08 a0"),
        bytes.fromhex("11 01 01"),
    ]
    return [((0xF0 + i) & 0xFF, body) for i, body in enumerate(out)]


def talk(path: str, steps: list[tuple[int, bytes]]) -> list[tuple[str, bytes]]:
    """Run ``steps``; return (what was sent, answer) pairs."""
    answers = []
    with serial.Serial(path, 115200, timeout=0.5) as port:
        time.sleep(0.2)  # reset and start-up
        for seq, body in steps:
            answers.append((f"{seq:#x} {body[:6].hex(' ')}", exchange(port, seq, body)))
            if len(answers) == 3:
                # A bad checksum in between: both stay silent and go on.
                bad = bytearray(frame(0x33, b"\x01"))
                bad[-1] ^= 1
                port.write(bytes(bad))
                port.timeout = 0.3
                answers.append(("bad checksum", port.read(64)))
    return answers


def test_the_same_answers_as_the_shipped_bootloader(boards):
    real, simulated = boards(b"\xff" * 4 + bytes(252))
    steps = script()
    expected = talk(real, steps)
    assert expected[0][1].startswith(frame(0xF0, b"\x01\x00\x08AVRISP_2")), expected[0]
    got = talk(simulated, steps)
    for want, have in zip(expected, got, strict=True):
        assert have == want


def test_the_same_monitor(boards):
    app = bytearray(0x10000)
    app[0:4] = b"\xff" * 4
    for address, text in TEXTS.items():
        app[address : address + len(text) + 1] = text + b"\x00"
    outputs = []
    for path in boards(bytes(app)):
        with serial.Serial(path, 115200, timeout=0.5) as port:
            time.sleep(0.2)
            port.write(b"!!!")
            got = port.read(200)
            for key in b"x\x01q":
                port.write(bytes([key]))
                got += port.read(64)
            outputs.append(got)
    assert outputs[0] == outputs[1]
    assert b"Arduino explorer stk500V2 by MLS\r\nBootloader>X Huh?" in outputs[0]
