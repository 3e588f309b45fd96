"""sim:// URLs, defaults, option checking and the pyserial-like port."""

from __future__ import annotations

import time

import pytest
from sim_helpers import exchange, sim_url

from flashsh.sims import SIMS, sim_class
from flashsh.sims.port import SimPort
from flashsh.sims.stk500v1 import Stk500v1Sim
from flashsh.sims.url import open_sim_port, parse_sim_url


def test_parse_splits_protocol_and_repeatable_options():
    protocol, options = parse_sim_url("sim://STK500v1?chip=atmega328p&fault=drop:1&fault=dead")
    assert protocol == "stk500v1"
    assert options == {"chip": ["atmega328p"], "fault": ["drop:1", "dead"]}
    assert parse_sim_url("sim://stk500v1") == ("stk500v1", {})


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sim://nope?chip=x", "no simulator for protocol 'nope'; valid: stk500v1"),
        ("sim://stk500v1?chp=atmega328p", "unknown option 'chp' for sim://stk500v1; valid: chip,"),
        ("sim://stk500v1?chip=atmega9", "unknown chip 'atmega9'"),
        ("sim://stk500v1?bootloader=caterina", "valid: optiboot, atmegaboot"),
        ("sim://stk500v1?version=6.2", "valid: 4.4, 7.0"),
        ("sim://stk500v1?baud=fast", "baud='fast' needs a number"),
        ("sim://stk500v1?bootloader=atmegaboot&chip=atmega2560", "ATmegaBOOT was built for"),
        ("sim://stk500v1?eeprom=yes", "eeprom takes 0 or 1"),
        ("sim://stk500v1?fault=boom", "unknown fault"),
        ("sim://stk500v1?chip", "malformed options"),
        ("sim://stk500v1/x", "unexpected"),
        ("stk500v1?chip=atmega328p", "not a simulator URL"),
    ],
)
def test_bad_urls_raise_one_line_value_errors(url, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")) as info:
        open_sim_port(url, 115200)
    assert "\n" not in str(info.value)


def test_registry_names_classes_by_string():
    assert SIMS["stk500v1"] == "flashsh.sims.stk500v1:Stk500v1Sim"
    assert sim_class("stk500v1") is Stk500v1Sim


@pytest.mark.parametrize(
    ("query", "name", "baud", "boot_start"),
    [
        ("", "optiboot 8.3", 115200, 0x7E00),
        ("version=4.4", "optiboot 4.4", 115200, 0x7E00),
        ("chip=atmega1284p", "optiboot 8.3", 115200, 0x1FC00),
        ("chip=atmega1284p&baud=57600", "optiboot 8.3", 57600, 0x1FC00),
        ("chip=atmega2560", "optiboot 8.3", 115200, 0x3FC00),
        ("bootloader=atmegaboot", "ATmegaBOOT", 57600, 0x7800),
        ("bootloader=atmegaboot&chip=atmega168", "ATmegaBOOT", 19200, 0x3800),
        ("bootloader=atmegaboot&chip=atmega1280", "ATmegaBOOT", 57600, 0x1F000),
    ],
)
def test_defaults(query, name, baud, boot_start):
    sim = Stk500v1Sim.from_options(parse_sim_url(sim_url(query))[1], host_baud=None)
    assert (sim.firmware.name, sim.baud, sim.memory.boot_start) == (name, baud, boot_start)
    # The boot section holds the bootloader's stand-in code, not erased flash.
    assert b"\xff\xff\xff\xff" not in sim.flash[boot_start:-2]
    assert sim.flash[:boot_start] == b"\xff" * boot_start


def test_image_option_programs_flash_before_the_start(sim_port, tmp_path):
    raw = tmp_path / "app.bin"
    raw.write_bytes(b"\x0c\x94\x34\x00" * 16)
    port = sim_port(f"image={raw}")
    assert port.sim.flash[:64] == raw.read_bytes()
    hexfile = tmp_path / "app.hex"
    hexfile.write_text(":0400100001020304E2\n:00000001FF\n")
    port = sim_port(f"image={hexfile}")
    assert port.sim.flash[0x10:0x14] == b"\x01\x02\x03\x04"
    exchange(port, "55 08 00 20", "14 10")
    exchange(port, "74 00 04 46 20", "14 01 02 03 04 10")


def test_image_that_reaches_the_bootloader_is_refused(tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(0x7E01))
    with pytest.raises(ValueError, match="runs into the bootloader"):
        open_sim_port(sim_url(f"image={big}"), 115200)
    with pytest.raises(ValueError, match="missing.bin"):
        open_sim_port(sim_url(f"image={tmp_path / 'missing.bin'}"), 115200)


def test_port_behaves_like_pyserial(sim_port):
    port = sim_port()
    assert isinstance(port, SimPort) and port.is_open
    assert port.dtr and port.rts  # asserted on open, as pyserial does
    assert port.write(bytearray(b"\x30\x20")) == 2
    port.timeout = 1.0
    assert port.read(2) == b"\x14\x10"
    port.write(b"\x30\x20")
    port.timeout = 0.2
    assert port.read(10) == b"\x14\x10"  # fewer than asked at timeout
    port.write(b"\x30\x20")
    port.flush()
    assert port.sim.mcu.wait_for_state("bootloader")
    port.baudrate = 57600
    assert port.sim.to_target.tx_baud == 57600 and port.sim.to_host.rx_baud == 57600
    assert port.sim.baud == 115200
    port.close()
    assert not port.is_open and port.sim.state == "stopped"
    with pytest.raises(OSError):
        port.read(1)


def test_reset_input_buffer_and_in_waiting(sim_port):
    port = sim_port()
    port.write(b"\x30\x20")
    deadline = time.monotonic() + 1.0
    while port.in_waiting < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert port.in_waiting == 2
    port.reset_input_buffer()
    assert port.in_waiting == 0
    port.timeout = 0.05
    assert port.read(1) == b""


def test_flashsh_serial_transport_opens_sim_urls():
    from flashsh.transports.serial import open_serial

    link = open_serial(sim_url(), 115200)
    try:
        assert link.port.sim.mcu.wait_for_state("bootloader")
        link.write(b"\x30\x20")
        assert link.read(2, 1.0) == b"\x14\x10"
        assert link.pulse_reset(discharge=0.0, settle=0.0)
        assert link.port.sim.mcu.resets["external"] >= 2
    finally:
        link.close()
