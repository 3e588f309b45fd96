"""Real-time behaviour: line speed, programming time, start-up, receiver overruns."""

from __future__ import annotations

import time

from sim_helpers import exchange, prog_page, read_for

PAGE = bytes(range(128))


def timed_page_write(port) -> tuple[float, float]:
    """Send LOAD_ADDRESS + PROG_PAGE in one go; return the seconds until INSYNC of the
    page write and until its OK."""
    port.write(bytes.fromhex("55 00 00 20"))
    assert read_for(port, 2, 1.0) == b"\x14\x10"
    start = time.monotonic()
    port.write(bytes.fromhex(prog_page(PAGE)))
    assert read_for(port, 1, 1.0) == b"\x14"
    insync = time.monotonic() - start
    assert read_for(port, 1, 1.0) == b"\x10"
    return insync, time.monotonic() - start


def test_page_write_takes_line_time_plus_programming_time(sim_port):
    port = sim_port("throttle=1&page_ms=8.2")
    insync, ok = timed_page_write(port)
    line = 133 * 10 / 115200  # 64 00 80 46 + 128 bytes + 20 at 8N1
    assert line <= insync < line + 0.015
    # optiboot sends INSYNC before erasing and writing, OK after.
    assert 0.0075 <= ok - insync < 0.025


def test_throttle_scales_line_and_programming_time(sim_port):
    port = sim_port("throttle=0.1&page_ms=50")
    insync, ok = timed_page_write(port)
    assert 0.00115 <= insync < 0.015
    assert 0.0045 <= ok - insync < 0.02


def test_bytes_sent_during_a_page_write_overrun_the_receiver(sim_port):
    port = sim_port("throttle=1&page_ms=30")
    exchange(port, "55 00 00 20", "14 10")
    # Three GET_SYNCs right behind the page: they arrive while the flash is busy, the
    # UART keeps three bytes (30 20 30) and loses the rest.
    port.write(bytes.fromhex(prog_page(PAGE) + " 30 20 30 20 30 20"))
    assert read_for(port, 4, 1.0) == b"\x14\x10\x14\x10"
    assert read_for(port, 1, 0.1) == b""
    assert port.sim.mcu.overruns == 3
    exchange(port, "20", "14 10")  # the kept 0x30 still waits for its terminator


def test_bytes_before_the_bootloader_starts_are_lost(sim_port):
    port = sim_port("throttle=1&startup_ms=65", settle=False)
    port.sim.reset()
    exchange(port, "30 20", "", silence=0.02)
    time.sleep(0.1)
    exchange(port, "30 20", "14 10")


def test_optiboot_44_loses_bytes_while_blinking_its_led(sim_port):
    # At throttle 0.2: start-up 13 ms, then 6 LED toggles of 12.5 ms without reading.
    port = sim_port("version=4.4&throttle=0.2&startup_ms=65&flashes=3", settle=False)
    port.sim.reset()
    time.sleep(0.03)
    port.write(bytes.fromhex("30 20 30 20 30 20"))
    assert read_for(port, 2, 1.0) == b"\x14\x10"
    assert read_for(port, 1, 0.1) == b""
    assert port.sim.mcu.overruns == 3
    exchange(port, "20", "14 10")
