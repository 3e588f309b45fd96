"""optiboot models against the fact sheet (docs/protocols/stk500v1.md, sections 4.1, 8)."""

from __future__ import annotations

import time

import pytest
from sim_helpers import exchange, load, prog_page, read_page, reply

PAGE = bytes((i * 7 + 3) & 0xFF for i in range(128))

SET_DEVICE_328P = "42 86 00 00 01 01 01 01 03 ff ff ff ff 00 80 04 00 00 00 80 00 20"


def wait_app(port, timeout: float = 2.0) -> None:
    assert port.sim.mcu.wait_for_state("application", timeout), port.sim.mcu.events


@pytest.mark.parametrize(("version", "major", "minor"), [("4.4", 4, 4), ("8.3", 8, 3)])
def test_sample_session_of_the_fact_sheet(sim_port, version, major, minor):
    port = sim_port(f"version={version}")
    exchange(port, "30 20", "14 10")
    exchange(port, "41 81 20", reply(bytes([major])))
    exchange(port, "41 82 20", reply(bytes([minor])))
    exchange(port, SET_DEVICE_328P, "14 10")
    exchange(port, "45 05 04 d7 c2 01 20", "14 10")
    exchange(port, "50 20", "14 10")
    exchange(port, "75 20", "14 1e 95 0f 10")
    exchange(port, load(0x80), "14 10")
    exchange(port, prog_page(PAGE), "14 10")
    assert port.sim.flash[0x100:0x180] == PAGE
    exchange(port, load(0x80), "14 10")
    exchange(port, read_page(128), reply(PAGE))
    sent = time.monotonic()
    exchange(port, "51 20", "14 10")
    wait_app(port)
    # The application starts about 16 ms after LEAVE_PROGMODE (a watchdog reset).
    reset = next(e for e in port.sim.mcu.events if e.what == "watchdog reset")
    assert 0.012 < port.sim.mcu.t0 + reset.t - sent < 0.1


def test_version_word_sits_in_the_last_two_bytes_of_flash(sim_port):
    assert sim_port("version=8.3").sim.flash[-2:] == b"\x03\x08"
    assert sim_port("version=4.4").sim.flash[-2:] == b"\x04\x04"


@pytest.mark.parametrize("version", ["4.4", "8.3"])
def test_other_single_byte_commands_answer_insync_ok_without_data(sim_port, version):
    port = sim_port(f"version={version}")
    for command in ("31", "72", "73", "76", "52", "50", "99"):
        exchange(port, f"{command} 20", "14 10")
    exchange(port, "41 80 20", "14 03 10")
    exchange(port, "41 98 20", "14 03 10")


@pytest.mark.parametrize("version", ["4.4", "8.3"])
def test_universal_answers_zero_and_reads_no_fuses(sim_port, version):
    port = sim_port(f"version={version}")
    for isp in ("50 00 00 00", "58 08 00 00", "30 00 01 00", "ac 80 00 00"):
        exchange(port, f"56 {isp} 20", "14 00 10")


@pytest.mark.parametrize("request_", ["40 81 00 20", "60 00 00 20", "30 21", "41 81 00"])
def test_a_missing_terminator_resets_into_the_application_silently(sim_port, request_):
    port = sim_port("version=8.3")
    exchange(port, request_, "")
    wait_app(port)
    assert any("no 0x20" in e.what for e in port.sim.mcu.events)
    # The application does not speak STK500 ...
    exchange(port, "30 20", "")
    # ... until the next reset (a DTR edge).
    port.dtr = False
    port.dtr = True
    exchange(port, "30 20", "14 10")


def test_silence_lets_the_watchdog_start_the_application(sim_port):
    port = sim_port("timeout_ms=100")
    exchange(port, "30 20", "14 10")
    time.sleep(0.25)
    assert port.sim.state == "application"
    assert port.sim.mcu.resets.get("watchdog") == 1
    exchange(port, "30 20", "")


def test_each_good_byte_feeds_the_watchdog(sim_port):
    port = sim_port("timeout_ms=150")
    for _ in range(8):
        exchange(port, "30 20", "14 10")
        time.sleep(0.06)
    assert port.sim.state == "bootloader"
    assert "watchdog" not in port.sim.mcu.resets


@pytest.mark.parametrize("version", ["4.4", "8.3"])
def test_chip_erase_erases_nothing(sim_port, version):
    port = sim_port(f"version={version}")
    exchange(port, load(0), "14 10")
    exchange(port, prog_page(PAGE), "14 10")
    exchange(port, "52 20", "14 10")
    exchange(port, "56 ac 80 00 00 20", "14 00 10")  # avrdude's ISP chip erase
    assert port.sim.flash[:128] == PAGE


@pytest.mark.parametrize("version", ["4.4", "8.3"])
def test_bootloader_runs_only_after_an_external_reset(sim_port, version):
    port = sim_port(f"version={version}")
    port.sim.power_cycle()
    wait_app(port)
    exchange(port, "30 20", "")
    port.sim.reset()
    exchange(port, "30 20", "14 10")


def test_writes_into_the_boot_section_are_refused_by_the_lock_bits(sim_port):
    port = sim_port("version=8.3")
    boot = port.sim.memory.boot_start
    before = port.sim.flash
    exchange(port, load(boot // 2), "14 10")
    exchange(port, prog_page(PAGE), "14 10")  # optiboot does not check; SPM refuses
    assert port.sim.flash == before
    assert port.sim.memory.stats.boot_writes_refused == [boot, boot]


# ------------------------------------------------------------------ 4.4 quirks


def test_44_eeprom_write_overwrites_flash_with_a_whole_page(sim_port):
    port = sim_port("version=4.4")
    exchange(port, load(0), "14 10")
    exchange(port, prog_page(PAGE), "14 10")
    exchange(port, load(0), "14 10")
    exchange(port, prog_page(b"\x01\x02\x03\x04", "E"), "14 10")
    # Memtype ignored: flash page 0 was erased and written from the RAM buffer, whose
    # tail still holds the previous page.
    assert port.sim.flash[:128] == b"\x01\x02\x03\x04" + PAGE[4:]
    assert port.sim.eeprom == b"\xff" * 1024
    exchange(port, load(0), "14 10")
    exchange(port, read_page(8, "E"), reply(port.sim.flash[:8]))


def test_44_short_block_programs_stale_ram_into_the_rest_of_the_page(sim_port):
    port = sim_port("version=4.4")
    ram = bytes(port.sim.firmware.buff[:128])
    exchange(port, load(0x40), "14 10")
    exchange(port, prog_page(b"\xaa\xbb"), "14 10")
    assert port.sim.flash[0x80:0x100] == b"\xaa\xbb" + ram[2:]
    assert port.sim.flash[0x82:0x100] != b"\xff" * 126


def test_44_reads_only_the_low_length_byte(sim_port):
    port = sim_port("version=4.4")
    exchange(port, load(0), "14 10")
    # Length 0x0104: 4.4 takes 4 bytes.
    exchange(port, prog_page(b"\x10\x20\x30\x40", length=0x0104), "14 10")
    assert port.sim.flash[:4] == b"\x10\x20\x30\x40"


@pytest.mark.parametrize(("version", "second"), [("4.4", 1), ("8.3", 0)])
def test_read_page_without_load_address(sim_port, version, second):
    port = sim_port(f"version={version}")
    port.sim.memory.flash[:16] = bytes(range(16))
    exchange(port, load(0), "14 10")
    exchange(port, read_page(8), reply(bytes(range(8))))
    # 4.4 moves its address on; 8.x reads the same block again.
    exchange(port, read_page(8), reply(bytes(range(8 * second, 8 * second + 8))))


# ------------------------------------------------------------------ 8.x quirks


def test_8x_short_block_writes_only_the_bytes_received(sim_port):
    port = sim_port("version=8.3")
    exchange(port, load(0x40), "14 10")
    exchange(port, prog_page(b"\xaa\xbb\xcc\xdd"), "14 10")
    assert port.sim.flash[0x80:0x100] == b"\xaa\xbb\xcc\xdd" + b"\xff" * 124


def test_8x_eeprom_write_without_eeprom_support_waits_for_the_watchdog(sim_port):
    port = sim_port("version=8.3&timeout_ms=100")
    before = port.sim.flash
    exchange(port, load(0), "14 10")
    # INSYNC comes after the terminator; then the firmware spins, no OK.
    exchange(port, prog_page(b"\x01\x02\x03\x04", "E"), "14")
    wait_app(port)
    assert port.sim.mcu.resets.get("watchdog") == 1
    assert port.sim.flash == before and port.sim.eeprom == b"\xff" * 1024


def test_8x_eeprom_read_without_eeprom_support_returns_flash(sim_port):
    port = sim_port("version=8.3")
    port.sim.memory.flash[0x20:0x28] = b"flashy!!"
    exchange(port, load(0x10), "14 10")
    exchange(port, read_page(8, "E"), reply(b"flashy!!"))


def test_8x_big_boot_builds_have_eeprom_with_doubled_addresses(sim_port):
    port = sim_port("chip=atmega1284p&version=8.3")
    exchange(port, load(8), "14 10")  # EEPROM byte 16
    exchange(port, prog_page(b"\x11\x22\x33\x44", "E"), "14 10")
    assert port.sim.eeprom[16:20] == b"\x11\x22\x33\x44"
    exchange(port, load(8), "14 10")
    exchange(port, read_page(4, "E"), reply(b"\x11\x22\x33\x44"))


def test_8x_odd_block_length_erases_the_page_then_hangs(sim_port):
    port = sim_port("version=8.3&timeout_ms=100")
    exchange(port, load(0), "14 10")
    exchange(port, prog_page(PAGE), "14 10")
    exchange(port, prog_page(b"\x01\x02\x03"), "14")
    wait_app(port)
    assert port.sim.flash[:128] == b"\xff" * 128


# ------------------------------------------------------------------ addressing


@pytest.mark.parametrize("version", ["4.4", "8.3"])
def test_1284p_reaches_the_upper_64k_through_word_bit_15(sim_port, version):
    port = sim_port(f"chip=atmega1284p&version={version}")
    data = bytes(range(256))
    exchange(port, load(0x8000), "14 10")  # byte 0x10000
    exchange(port, prog_page(data), "14 10")
    assert port.sim.flash[0x10000:0x10100] == data
    assert port.sim.flash[:256] == b"\xff" * 256
    exchange(port, load(0x8000), "14 10")
    exchange(port, read_page(256), reply(data))


def test_2560_fact_sheet_sample_with_the_extended_address(sim_port):
    port = sim_port("chip=atmega2560&version=8.3")
    data = bytes(range(256))
    exchange(port, "56 4d 00 01 00 20", "14 00 10")
    exchange(port, "55 00 00 20", "14 10")
    exchange(port, prog_page(data), "14 10")
    assert port.sim.flash[0x20000:0x20100] == data
    exchange(port, "55 00 00 20", "14 10")
    exchange(port, read_page(256), reply(data))


def test_2560_optiboot_44_has_no_extended_address(sim_port):
    port = sim_port("chip=atmega2560&version=4.4")
    exchange(port, "56 4d 00 01 00 20", "14 00 10")
    exchange(port, "55 00 00 20", "14 10")
    exchange(port, prog_page(bytes(256)), "14 10")
    assert port.sim.flash[:256] == bytes(256)
    assert port.sim.flash[0x20000:0x20100] == b"\xff" * 256


def test_2560_reading_across_a_64k_word_boundary_carries_into_rampz(sim_port):
    port = sim_port("chip=atmega2560&version=8.3")
    mem = port.sim.memory.flash
    mem[0x1FF00:0x20000] = b"\x01" * 256
    mem[0x20000:0x20100] = b"\x02" * 256
    exchange(port, "56 4d 00 00 00 20", "14 00 10")
    exchange(port, load(0xFF80), "14 10")  # byte 0x1FF00
    exchange(port, read_page(256), reply(b"\x01" * 256))
    # ELPM Z+ moved RAMPZ on: word 0 now means byte 0x20000 until the extended byte is
    # sent again.
    exchange(port, load(0), "14 10")
    exchange(port, read_page(8), reply(b"\x02" * 8))
    exchange(port, "56 4d 00 00 00 20", "14 00 10")
    exchange(port, load(0), "14 10")
    exchange(port, read_page(8), reply(b"\xff" * 8))
