"""Baud rate mismatch between host and simulated bootloader."""

from __future__ import annotations

import time

from sim_helpers import exchange, prog_page, talk

from flashsh.sims.wire import sample_frame


def test_host_at_the_wrong_rate_gets_no_answer_and_the_application_starts(sim_port):
    port = sim_port("", 57600)
    # 0x30 and 0x20 sent at 57600 read as 0x00 with framing errors at 115200: an unknown
    # command without its terminator.
    assert sample_frame(0x30, 57600, 115200) == (0x00, True)
    exchange(port, "30 20", "")
    assert port.sim.mcu.wait_for_state("application")
    assert port.sim.mcu.framing_errors == 2


def test_switching_to_the_right_rate_after_a_reset_works(sim_port):
    port = sim_port("", 57600)
    exchange(port, "30 20", "")
    port.baudrate = 115200
    port.dtr = False
    port.dtr = True
    exchange(port, "30 20", "14 10")


def test_a_few_percent_off_still_works(sim_port):
    port = sim_port("", 111111)
    exchange(port, "30 20", "14 10")


def test_framing_errors_do_not_feed_the_watchdog(sim_port):
    def stream(baud: int) -> str:
        port = sim_port("timeout_ms=150")
        port.write(bytes.fromhex("55 00 00 20 64 00 80 46"))  # page data comes next
        time.sleep(0.02)
        port.baudrate = baud
        for _ in range(8):  # 0.4 s of bytes, each well within the watchdog period
            port.write(b"\x30")
            time.sleep(0.05)
        return port.sim.state

    # Good bytes keep optiboot alive; the same bytes at the wrong rate do not.
    assert stream(115200) == "bootloader"
    assert stream(57600) == "application"


def test_target_replies_at_the_wrong_rate_arrive_garbled(sim_port):
    # ATmegaBOOT answers PROG_PAGE only after programming (200 ms here); the host
    # changes its rate meanwhile and reads the 57600-baud reply at 115200.
    port = sim_port("bootloader=atmegaboot&throttle=1&page_ms=200", 57600)
    port.write(bytes.fromhex("55 00 00 20 64 00 02 46 12 34 20"))
    time.sleep(0.05)
    port.baudrate = 115200
    expected = bytes(sample_frame(b, 57600, 115200)[0] for b in b"\x14\x10\x14\x10")
    assert expected != b"\x14\x10\x14\x10"
    port.timeout = 1.0
    assert port.read(2) == b"\x14\x10"  # LOAD_ADDRESS's reply left before the switch
    assert port.read(2) == expected[2:]


def test_melzi_style_1284p_at_57600(sim_port):
    port = sim_port("chip=atmega1284p&baud=57600", 57600)
    exchange(port, "75 20", "14 1e 97 05 10")
    wrong = sim_port("chip=atmega1284p&baud=57600", 115200)
    assert talk(wrong, "75 20", "") != "14 1e 97 05 10"
    exchange(port, "55 00 00 20", "14 10")
    exchange(port, prog_page(b"\x01\x02\x03\x04"), "14 10")
    assert port.sim.flash[:4] == b"\x01\x02\x03\x04"
