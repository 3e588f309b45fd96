"""What the real bootloaders do on the wire, observed in simavr.

These pin down the STK500v1 behaviour flashsh has to cope with (replies,
missing replies, resets, timeouts) using raw bytes over the simulator's pty.
Timings come from the harness log (wall-clock; the simulation is throttled to
real time, and on a busy host it can only fall behind, so upper bounds have slack).
"""

from __future__ import annotations

import time

import pytest
import serial

pytestmark = pytest.mark.debian

SYNC = b"\x30\x20"
OK = b"\x14\x10"


class Wire:
    """Raw STK500v1 bytes over the simulator's pty."""

    def __init__(self, sim, baud: int | None = None) -> None:
        self.sim = sim
        self.port = serial.Serial(sim.pty, baud or sim.bootloader.baud, timeout=0.3)
        sim.wait_for_log(r"external reset \(port opened\)")
        # 65 ms reset hold + start-up LED flashes (optiboot 4.4: ~0.38 s)
        time.sleep(0.6)

    def xfer(self, data: bytes, expect: int = 2) -> bytes:
        """Send, then read up to ``expect`` bytes (less if the target stays silent)."""
        self.port.reset_input_buffer()
        self.port.write(data)
        return self.port.read(expect)

    def close(self) -> None:
        self.port.close()


@pytest.fixture
def wire(avr_sim):
    wires: list[Wire] = []

    def open_wire(name: str, baud: int | None = None, **options) -> Wire:
        w = Wire(avr_sim(name, **options), baud)
        wires.append(w)
        return w

    yield open_wire
    for w in wires:
        w.close()


def seconds_between(sim, first: str, then: str) -> float:
    """Time from the last log event starting with ``first`` before ``then`` to ``then``."""
    events = sim.events()
    t_then = next(t for t, msg in events if msg.startswith(then))
    t_first = max(t for t, msg in events if msg.startswith(first) and t <= t_then)
    return t_then - t_first


def test_optiboot_replies(wire):
    w = wire("optiboot328", verbose=2)
    assert w.xfer(SYNC) == OK
    assert w.xfer(b"\x31\x20", 9) == OK  # no "AVR STK" sign-on string
    assert w.xfer(b"\x41\x81\x20", 3) == b"\x14\x04\x10"  # optiboot 4.4
    assert w.xfer(b"\x41\x82\x20", 3) == b"\x14\x04\x10"
    assert w.xfer(b"\x41\x80\x20", 3) == b"\x14\x03\x10"  # any other parameter
    assert w.xfer(b"\x75\x20", 5) == b"\x14\x1e\x95\x0f\x10"
    assert w.xfer(b"\x56\x50\x00\x00\x00\x20", 3) == b"\x14\x00\x10"  # "fuse" = 0
    assert w.xfer(b"\x72\x20", 4) == OK  # READ_FUSE: no data bytes at all
    assert w.xfer(b"\x52\x20") == OK  # CHIP_ERASE accepted, erases nothing
    # SET_PARAMETER: the byte after the command is not 0x20 -> 16 ms watchdog
    assert w.xfer(b"\x40\x81\x01\x20") == b""
    w.sim.wait_for_log(r"application entered")
    assert seconds_between(w.sim, "rx ", "watchdog reset") < 0.1


def test_optiboot_watchdog_is_one_second_after_last_byte(wire):
    w = wire("optiboot328", verbose=2)  # verbose=2 logs every byte
    assert w.xfer(SYNC) == OK
    w.sim.wait_for_log(r"application entered", timeout=3)
    assert 0.95 < seconds_between(w.sim, "rx ", "watchdog reset") < 1.2


def test_optiboot_leave_progmode_then_reset_button(wire):
    w = wire("optiboot328", verbose=2)
    assert w.xfer(SYNC) == OK
    assert w.xfer(b"\x51\x20") == OK
    w.sim.wait_for_log(r"application entered")
    assert 0.01 < seconds_between(w.sim, "tx 10", "watchdog reset") < 0.1
    assert w.xfer(SYNC) == b""  # the (parked) application does not answer
    w.sim.reset()  # external reset: EXTRF set -> bootloader runs again
    time.sleep(0.6)
    assert w.xfer(SYNC) == OK


def test_optiboot_eeprom_page_write_lands_in_flash(wire):
    w = wire("optiboot328")
    assert w.xfer(SYNC) == OK
    assert w.xfer(b"\x55\x40\x00\x20") == OK  # word address 0x40
    assert w.xfer(b"\x64\x00\x04\x45\x11\x22\x33\x44\x20") == OK  # 4 bytes, memtype 'E'
    assert w.xfer(b"\x55\x40\x00\x20") == OK
    assert w.xfer(b"\x74\x00\x04\x45\x20", 6) == b"\x14\x11\x22\x33\x44\x10"
    flash = w.sim.stop()
    assert flash[0x80:0x84] == b"\x11\x22\x33\x44"  # flash byte address 2 * 0x40


def test_atmegaboot_replies(wire):
    w = wire("atmegaboot328")
    assert w.xfer(SYNC) == OK
    assert w.xfer(b"\x31\x20", 9) == b"\x14AVR ISP\x10"
    assert w.xfer(b"\x41\x81\x20", 3) == b"\x14\x01\x10"
    assert w.xfer(b"\x41\x82\x20", 3) == b"\x14\x10\x10"
    assert w.xfer(b"\x56\x30\x00\x01\x00\x20", 3) == b"\x14\x95\x10"  # signature byte 1
    assert w.xfer(b"\x56\x50\x00\x00\x00\x20", 3) == b"\x14\x00\x10"
    # EEPROM works, at 2 x the loaded address
    assert w.xfer(b"\x55\x08\x00\x20") == OK
    assert w.xfer(b"\x64\x00\x02\x45\xab\xcd\x20") == OK
    assert w.xfer(b"\x55\x08\x00\x20") == OK
    assert w.xfer(b"\x74\x00\x02\x45\x20", 4) == b"\x14\xab\xcd\x10"
    # LEAVE_PROGMODE replies and stays in the bootloader
    assert w.xfer(b"\x51\x20") == OK
    time.sleep(0.2)
    assert w.xfer(SYNC) == OK
    assert "application entered" not in w.sim.log
    assert w.sim.stop()[:2] == b"\xff\xff"  # EEPROM write did not touch flash


def test_atmegaboot_unknown_commands_count_twice(wire):
    w = wire("atmegaboot328")
    assert w.xfer(SYNC) == OK
    # No reply at all; the command byte and its 0x20 are both "unknown",
    # so the third one reaches the 5-error limit and starts the application.
    assert w.xfer(b"\x72\x20") == b""
    assert w.xfer(b"\x72\x20") == b""
    assert "application entered" not in w.sim.log
    assert w.xfer(b"\x72\x20") == b""
    w.sim.wait_for_log(r"application entered", timeout=1)


def test_atmegaboot_receive_timeout(wire):
    w = wire("atmegaboot328", verbose=2)
    assert w.xfer(SYNC) == OK
    w.sim.wait_for_log(r"application entered", timeout=3)
    assert 1.0 < seconds_between(w.sim, "rx ", "application entered") < 1.35


def test_wrong_baud_rate_gets_no_reply(wire):
    w = wire("optiboot328", baud=57600)
    assert w.xfer(SYNC) == b""
    w.sim.wait_for_log(r"application entered", timeout=2)
