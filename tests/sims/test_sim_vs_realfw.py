"""The models answer byte for byte like the real bootloader binaries.

The same byte scripts go to the Arduino bootloaders running in simavr (tests/harness: the
optiboot 4.4 source Debian ships, built for the ATmega328P, and the shipped
ATmegaBOOT_168_atmega328.hex) and to the simulator at real speed; every reply must match.
Skips when the harness cannot be built (gcc, libsimavr-dev, gcc-avr, arduino-core-avr).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import serial

from flashsh.sims.url import open_sim_port

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.avrsim import AvrSim  # noqa: E402
from harness.build import HarnessUnavailable, build_avr_pty  # noqa: E402
from harness.firmware import get_bootloader  # noqa: E402

pytestmark = pytest.mark.debian

SET_DEVICE = "42" + " 00" * 20 + " 20"
COMMON = [
    "30 20", "31 20", "41 80 20", "41 81 20", "41 82 20", "41 98 20", "41 90 20",
    "56 50 00 00 00 20", "56 30 00 01 00 20", "75 20", "76 20", "52 20", "50 20",
    SET_DEVICE, "45 05 04 d7 c2 01 20",
    "55 00 00 20", "74 00 08 46 20", "74 00 08 46 20",
    "55 40 00 20", "64 00 04 45 11 22 33 44 20", "55 40 00 20", "74 00 04 45 20",
    "55 40 00 20", "74 00 04 46 20",
    "55 00 01 20", "64 00 04 46 a1 b2 c3 d4 20", "55 00 01 20", "74 00 04 46 20",
]  # fmt: skip
OPTIBOOT = [*COMMON, "72 20", "73 20", "51 20", "30 20", "30 20"]
ATMEGABOOT = [
    *COMMON, "40 81 20", "40 90 01 20", "51 20", "30 20",
    "74 00 04 46 21", "72 20", "30 20", "72 20", "30 20", "72", "30 20",
]  # fmt: skip


def run_script(port, script: list[str]) -> list[str]:
    replies = []
    for request in script:
        port.reset_input_buffer()
        port.write(bytes.fromhex(request))
        port.timeout = 0.1
        got = port.read(1)
        port.timeout = 0.02
        while got and (more := port.read(4096)):
            got += more
        replies.append(got.hex(" "))
    return replies


def real_replies(name: str, script: list[str], baud: int, workdir: Path) -> list[str]:
    try:
        binary = build_avr_pty()
        bootloader = get_bootloader(name)
    except HarnessUnavailable as exc:
        pytest.skip(f"simulator harness unavailable: {exc}")
    with AvrSim(bootloader, workdir, binary=binary) as sim, serial.Serial(sim.pty, baud) as port:
        time.sleep(0.6)  # reset, start-up, LED
        return run_script(port, script)


def sim_replies(query: str, script: list[str], baud: int) -> list[str]:
    with open_sim_port(f"sim://stk500v1?{query}", baud) as port:
        time.sleep(0.6)
        return run_script(port, script)


@pytest.mark.parametrize(
    ("name", "query", "baud", "script"),
    [
        ("optiboot328", "version=4.4", 115200, OPTIBOOT),
        ("atmegaboot328", "bootloader=atmegaboot", 57600, ATMEGABOOT),
    ],
    ids=["optiboot-4.4", "atmegaboot"],
)
def test_replies_match_the_real_bootloader(tmp_path, name, query, baud, script):
    real = real_replies(name, script, baud, tmp_path)
    ours = sim_replies(query, script, baud)
    assert any(real) and not all(real)  # the script has both answers and silences
    for request, want, got in zip(script, real, ours, strict=True):
        assert got == want, f"{request}: real bootloader {want!r}, simulator {got!r}"
