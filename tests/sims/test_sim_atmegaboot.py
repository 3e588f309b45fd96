"""ATmegaBOOT_168 model against the fact sheet (docs/protocols/stk500v1.md, section 4.2)."""

from __future__ import annotations

import time

import pytest
from sim_helpers import exchange, load, prog_page, read_page, reply

AB = "bootloader=atmegaboot"


def wait_app(port, timeout: float = 2.0) -> None:
    assert port.sim.mcu.wait_for_state("application", timeout), port.sim.mcu.events


def test_identification_and_parameters(sim_port):
    port = sim_port(AB, 57600)
    exchange(port, "30 20", "14 10")
    exchange(port, "31 20", "14 41 56 52 20 49 53 50 10")  # "AVR ISP"
    exchange(port, "41 80 20", "14 02 10")
    exchange(port, "41 81 20", "14 01 10")
    exchange(port, "41 82 20", "14 10 10")  # version 1.16
    exchange(port, "41 98 20", "14 03 10")
    exchange(port, "41 90 20", "14 00 10")
    exchange(port, "75 20", "14 1e 95 0f 10")
    exchange(port, "76 20", "14 00 10")


def test_signature_through_universal_but_no_fuses(sim_port):
    port = sim_port(AB, 57600)
    exchange(port, "56 30 00 00 00 20", "14 1e 10")
    exchange(port, "56 30 00 01 00 20", "14 95 10")
    exchange(port, "56 30 00 02 00 20", "14 0f 10")
    exchange(port, "56 30 00 07 00 20", "14 0f 10")
    exchange(port, "56 50 00 00 00 20", "14 00 10")  # low fuse: unreadable
    exchange(port, "56 58 08 00 00 20", "14 00 10")  # high fuse


def test_set_parameter_value_byte_only_above_0x85(sim_port):
    port = sim_port(AB, 57600)
    exchange(port, "40 81 20", "14 10")  # the "value" position is the terminator
    exchange(port, "40 90 01 20", "14 10")
    exchange(port, "30 20", "14 10")


def test_flash_write_read_no_chip_erase_and_leave_stays(sim_port):
    port = sim_port(AB, 57600)
    data = bytes(range(128))
    exchange(port, load(0x40), "14 10")
    exchange(port, prog_page(data), "14 10")
    assert port.sim.flash[0x80:0x100] == data
    exchange(port, "52 20", "14 10")
    exchange(port, load(0x40), "14 10")
    exchange(port, read_page(128), reply(data))
    exchange(port, "51 20", "14 10")
    # Unlike optiboot, LEAVE_PROGMODE keeps the bootloader listening.
    exchange(port, "30 20", "14 10")
    assert port.sim.state == "bootloader"


def test_eeprom_uses_doubled_addresses(sim_port):
    port = sim_port(AB, 57600)
    exchange(port, load(8), "14 10")  # byte address 16
    exchange(port, prog_page(b"\x11\x22\x33\x44", "E"), "14 10")
    assert port.sim.eeprom[16:20] == b"\x11\x22\x33\x44"
    assert port.sim.flash[:0x7800] == b"\xff" * 0x7800
    exchange(port, load(8), "14 10")
    exchange(port, read_page(6, "E"), reply(b"\x11\x22\x33\x44\xff\xff"))


def test_odd_length_is_rounded_up_with_the_next_buffer_byte(sim_port):
    port = sim_port(AB, 57600)
    exchange(port, load(0), "14 10")
    exchange(port, prog_page(b"\x01\x02\x03"), "14 10")
    # The buffer is zeroed at start-up (.bss); the rest of the page stays erased.
    assert port.sim.flash[:128] == b"\x01\x02\x03\x00" + b"\xff" * 124


def test_five_errors_start_the_application(sim_port):
    port = sim_port(AB, 57600)
    # An unknown command costs one error, and its 0x20 another.
    exchange(port, "72 20", "")
    exchange(port, "72 20", "")
    exchange(port, "30 20", "14 10")
    # READ_PAGE with a bad terminator answers nothing but counts no error.
    exchange(port, "74 00 04 46 21", "")
    exchange(port, "30 20", "14 10")
    exchange(port, "72", "")
    wait_app(port)
    exchange(port, "30 20", "")


def test_each_getch_times_out_into_the_application(sim_port):
    port = sim_port(f"{AB}&timeout_ms=100", 57600)
    exchange(port, "30", "")  # half a command, then silence
    time.sleep(0.2)
    assert port.sim.state == "application"
    assert any("no byte in time" in e.what for e in port.sim.mcu.events)


def test_bootloader_runs_after_power_on_too(sim_port):
    port = sim_port(AB, 57600)
    port.sim.power_cycle()
    exchange(port, "30 20", "14 10")
    assert port.sim.mcu.resets["power-on"] == 2


@pytest.mark.parametrize(("chip", "baud"), [("atmega168", 19200), ("atmega1280", 57600)])
def test_other_builds_answer_at_their_baud_rate(sim_port, chip, baud):
    port = sim_port(f"{AB}&chip={chip}", baud)
    assert port.sim.baud == baud
    exchange(port, "30 20", "14 10")


def test_mega_1280_reaches_the_upper_64k_through_word_bit_15(sim_port):
    port = sim_port(f"{AB}&chip=atmega1280", 57600)
    data = bytes(range(256))
    exchange(port, load(0x8000), "14 10")
    exchange(port, prog_page(data), "14 10")
    assert port.sim.flash[0x10000:0x10100] == data
    assert port.sim.flash[:0x100] == b"\xff" * 256
    exchange(port, load(0x8000), "14 10")
    exchange(port, read_page(256), reply(data))


def test_mega_1280_monitor_stops_stk500_answers(sim_port):
    port = sim_port(f"{AB}&chip=atmega1280&timeout_ms=150", 57600)
    exchange(port, "21 00 30 20", "14 10")  # a lone "!" eats the byte after it
    exchange(port, "21 21 21", "")
    exchange(port, "30 20", "")
    time.sleep(0.3)
    assert port.sim.state == "application"
