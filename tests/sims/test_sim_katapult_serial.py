"""Katapult and Klipper boards on a serial link (USB-CDC or UART), through SimPort and a
pty. Klipper's message layer is a stand-in here, injected into the board."""

from __future__ import annotations

import signal
import struct
import subprocess
import sys
import time

import pytest
import serial
from katapult_can_helpers import (
    BLOCK_ACK_2000,
    COMMAND_ERROR,
    COMPLETE,
    COMPLETE_ACK,
    CONNECT,
    CONNECT_REPLY,
    GET_CANBUS_ID,
    SEND_EOF,
    wait_for,
)

from flashsh.protocols import katapult_frame as kf
from flashsh.sims.katapult import KatapultBoard, KlipperBoard
from flashsh.sims.port import SimPort
from flashsh.sims.url import open_sim_port

SERIAL_REQUEST = b"~ \x1c Request Serial Bootloader!! ~"


class FakeKlipper:
    """Answers ``identify`` and asks for the bootloader on the serial request string."""

    def __init__(self, mcu: str, on_bootloader_request) -> None:
        self.mcu = mcu
        self.request = on_bootloader_request
        self.seen = b""

    def feed(self, data: bytes) -> bytes:
        self.seen += data
        if SERIAL_REQUEST in self.seen:
            self.seen = b""
            self.request()
        return b"klipper-here" if b"identify" in data else b""


def board(cls=KatapultBoard, query: str = "", host_baud: int = 250000) -> SimPort:
    options: dict[str, list[str]] = {"throttle": ["0"], "double_reset_ms": ["0"]}
    for item in filter(None, query.split("&")):
        name, _, value = item.partition("=")
        options.setdefault(name, []).append(value)
    sim = cls(options, host_baud=host_baud, klipper=FakeKlipper)
    port = SimPort(sim, host_baud, name="test")
    port.timeout = 0.3
    return port


@pytest.fixture
def ports():
    opened: list[SimPort] = []

    def make(*args, **kw) -> SimPort:
        port = board(*args, **kw)
        opened.append(port)
        return port

    yield make
    for port in opened:
        port.close()
        assert not port.sim.clock.errors


def command(port: SimPort, frame: str, size: int = 4096) -> str:
    port.write(bytes.fromhex(frame))
    got = port.read(8)
    if len(got) >= 4 and got[:2] == b"\x01\x88":
        got += port.read(8 + 4 * got[3] - len(got))
    return got.hex(" ")


def block(address: int, data: bytes) -> str:
    return kf.build(kf.SEND_BLOCK, struct.pack("<I", address) + data).hex(" ")


def test_usb_connect_and_no_canbus_id(ports):
    port = ports()
    assert port.sim.usb_id == "1d50:6177"
    assert command(port, CONNECT) == CONNECT_REPLY
    assert command(port, GET_CANBUS_ID) == COMMAND_ERROR


def test_uart_at_the_right_and_the_wrong_baud(ports):
    port = ports(query="link=uart")
    assert port.sim.usb_id is None
    assert command(port, CONNECT) == CONNECT_REPLY
    port.baudrate = 115200
    assert command(port, CONNECT) != CONNECT_REPLY


def test_uart_main_loop_wakes_on_the_sync_byte(ports):
    port = ports(query="link=uart")
    frame = bytes.fromhex(CONNECT)
    port.write(frame[:-1])
    assert port.read(8) == b""
    port.write(frame[-1:])
    assert port.read(48).hex(" ") == CONNECT_REPLY


def test_usb_transmit_buffer_takes_a_long_connect_reply(ports):
    port = ports(query="version=" + "v" * 100)
    assert command(port, CONNECT).startswith("01 88 a0 21 11 00 00 00")


def test_flash_verify_complete_then_klipper_enumerates(ports):
    port = ports()
    image = struct.pack("<II", 0x20005000, 0x08002101) + bytes(range(56))
    assert command(port, block(0x08002000, image)) == BLOCK_ACK_2000
    # One page; CRC worked out by hand with the algorithm of katapult.md 2.1.
    assert command(port, SEND_EOF) == "01 88 a0 02 13 00 00 00 01 00 00 00 2d c4 99 03"
    reply = bytes.fromhex(command(port, kf.build(kf.REQUEST_BLOCK, b"\x00\x20\x00\x08").hex()))
    assert reply[12:76] == image
    assert command(port, COMPLETE) == COMPLETE_ACK
    assert wait_for(lambda: port.sim.usb_id == "1d50:614e")
    port.write(b"identify")
    assert port.read(12) == b"klipper-here"


def test_klipper_usb_1200_baud_touch(ports):
    port = ports(KlipperBoard)
    assert port.sim.state == "application"
    assert port.sim.usb_id == "1d50:614e"
    port.baudrate = 1200  # DTR still high: nothing yet
    time.sleep(0.05)
    assert port.sim.state == "application"
    port.dtr = False
    assert wait_for(lambda: port.sim.usb_id == "1d50:6177")
    assert port.sim.node.logged("1200-baud touch")


def test_klipper_uart_serial_request_string(ports):
    port = ports(KlipperBoard, query="link=uart")
    port.write(SERIAL_REQUEST)
    assert wait_for(lambda: port.sim.state == "bootloader")
    port.baudrate = 1200
    port.dtr = False  # the touch means nothing on a UART
    port.baudrate = 250000
    assert command(port, CONNECT) == CONNECT_REPLY


def test_klipper_usb_ignores_the_serial_request_string(ports):
    port = ports(KlipperBoard)
    port.write(SERIAL_REQUEST)
    time.sleep(0.1)
    assert port.sim.state == "application"


def test_serial_faults(ports):
    port = ports(query="fault=crc:1,respdup:2,reboot:1")
    assert command(port, CONNECT) != CONNECT_REPLY
    assert command(port, CONNECT) == CONNECT_REPLY
    assert command(port, "") == CONNECT_REPLY  # the second copy
    assert command(port, block(0x08002000, bytes(64))) == ""
    assert port.sim.node.resets == 2


@pytest.mark.parametrize(
    "query, message",
    [
        ("link=can", "usb or uart"),
        ("fault=drop:3", "unknown fault"),
        ("bitrate=5", "unknown option 'bitrate'"),
    ],
)
def test_bad_options(query, message):
    with pytest.raises(ValueError, match=message):
        open_sim_port(f"sim://katapult?{query}", 250000)


def test_sim_url_in_process():
    port = open_sim_port("sim://katapult?throttle=0&mcu=stm32g0b1xx", 250000)
    try:
        port.timeout = 0.5
        assert port.sim.describe().startswith("stm32g0b1xx with Katapult v0.0.1")
        got = command(port, CONNECT)
        assert bytes.fromhex(got)[20:32] == b"stm32g0b1xx\x00"
    finally:
        port.close()


@pytest.mark.parametrize("link", ["usb", "uart"])
def test_pty_serves_katapult(link):
    # 250000 baud has no Bnnn constant: the pty must read the client's rate via TCGETS2.
    proc = subprocess.Popen(
        [sys.executable, "-m", "flashsh.sims", "katapult", "--throttle", "0", "-o", f"link={link}"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        path = proc.stdout.readline().strip()
        with serial.Serial(path, 250000, timeout=1) as link:
            link.write(bytes.fromhex(CONNECT))
            assert link.read(48).hex(" ") == CONNECT_REPLY
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
