"""The simulated CAN bus behind an slcan adapter on a pty, from another process, through
python-can's own slcan interface."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import can
import pytest

from flashsh.sims.slcan import decode_frame, encode_frame


@pytest.fixture
def served():
    procs = []

    def serve(*args: str) -> str:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flashsh.sims", "can", "--throttle", "0", *args],
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        path = proc.stdout.readline().strip()
        assert path.startswith("/dev/"), path
        return path

    yield serve
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0


def collect(bus: can.BusABC, seconds: float) -> list[tuple[int, str]]:
    out = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        msg = bus.recv(left)
        if msg is not None:
            out.append((msg.arbitration_id, bytes(msg.data).hex(" ")))
    return out


def test_query_and_connect_across_processes(served):
    path = served("--node", "katapult:aabbccddeeff", "--node", "klipper:112233445566")
    with can.Bus(interface="slcan", channel=path, bitrate=1_000_000, sleep_after_open=0) as bus:
        bus.send(can.Message(arbitration_id=0x3F0, data=b"\x00", is_extended_id=False))
        replies = sorted(d for i, d in collect(bus, 0.5) if i == 0x3F1)
        assert replies == ["20 11 22 33 44 55 66 01", "20 aa bb cc dd ee ff 11"]
        bus.send(
            can.Message(
                arbitration_id=0x3F0,
                data=bytes.fromhex("11 aa bb cc dd ee ff 81"),
                is_extended_id=False,
            )
        )
        bus.send(
            can.Message(
                arbitration_id=0x202,
                data=bytes.fromhex("01 88 16 00 f9 31 99 03"),
                is_extended_id=False,
            )
        )
        got = " ".join(d for i, d in collect(bus, 0.5) if i == 0x203)
        assert got == "01 88 a0 03 16 00 00 00 aa bb cc dd ee ff 00 00 fd 7d 99 03"


def test_wrong_bitrate_gets_nothing(served):
    path = served("--node", "katapult:aabbccddeeff")
    with can.Bus(interface="slcan", channel=path, bitrate=500_000, sleep_after_open=0) as bus:
        bus.send(can.Message(arbitration_id=0x3F0, data=b"\x00", is_extended_id=False))
        assert collect(bus, 0.4) == []


def test_bad_node_option_exits_2():
    proc = subprocess.run(
        [sys.executable, "-m", "flashsh.sims", "can", "--node", "katapult:xyz"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert proc.returncode == 2
    assert "12 hex digits" in proc.stderr


def test_line_format():
    msg = can.Message(arbitration_id=0x3F1, data=bytes.fromhex("20aabbccddeeff11"))
    msg.is_extended_id = False
    assert encode_frame(msg) == b"t3F1820AABBCCDDEEFF11\r"
    parsed = decode_frame("t3F0100")
    assert parsed is not None
    assert (parsed.arbitration_id, bytes(parsed.data)) == (0x3F0, b"\x00")
    assert decode_frame("t3F09") is None
