"""flashsh's STK500v2 protocol driving a simulated ISP programmer with a chip on its cable.

The simulated target follows the datasheets: SCK must stay below a quarter of its clock,
flash bits only go from 1 to 0 until a chip erase, fuses latch when programming mode
ends, unused fuse bits read back as 1.
"""

from __future__ import annotations

import random

import pytest

from flashsh import operations
from flashsh.errors import TargetError
from flashsh.images import Image
from flashsh.protocols import ProbeOptions
from flashsh.protocols.base import Capability
from flashsh.protocols.stk500v2_isp import sck_duration, sck_hz
from flashsh.protocols.stk500v2_wire import PARAM_SCK_DURATION
from flashsh.session import Session


@pytest.fixture
def isp():
    sessions: list[Session] = []

    def connect(options: str = "", chip: str = "atmega328p", protocol: str = "stk500v2"):
        url = f"sim://stk500v2?mode=isp&chip={chip}&throttle=0{options}"
        session = Session.open(url, ProbeOptions(protocol=protocol))
        sessions.append(session)
        return session

    yield connect
    for session in sessions:
        session.close()


def sim_of(session: Session):
    return session.bootloader.link.port.sim


def test_programmer_and_target_are_both_reported(isp):
    session = isp(protocol="auto")
    info = session.info
    assert info.chip == "ATmega328P" and info.bootloader.startswith("ISP programmer")
    details = info.details
    assert details["sign_on"] == "STK500_2"
    assert details["programmer_firmware"] == "2.10" and details["vtarget"] == "5.0 V"
    assert details["isp_clock"].startswith("115.2 kHz (SCK duration 2)")
    assert details["signature"] == "1E 95 0F (read from the chip)"
    assert details["calibration"] == "0x9c"
    caps = session.capabilities
    for flag in ("READ", "WRITE", "CHIP_ERASE", "EEPROM", "FUSES", "SIGNATURE_FROM_SILICON"):
        assert Capability[flag] in caps
    assert Capability.KEEP_ALIVE not in caps
    # No bootloader to protect: ISP is how bootloaders get written.
    assert session.memory_map.bootloader is None


def test_a_fast_isp_clock_is_slowed_for_a_factory_fresh_chip(isp):
    session = isp("&sck=1")  # 460.8 kHz: too fast for the 1 MHz a new chip runs at
    sim = sim_of(session)
    assert sim.firmware.params[PARAM_SCK_DURATION] == 2
    assert "lowered from 460.8 kHz" in session.info.details["isp_clock"]


def test_a_chip_on_the_128_khz_oscillator_gets_a_slower_clock(isp):
    # CKSEL 0011 without CKDIV8: 128 kHz, so SCK must stay below 32 kHz.
    session = isp("&fuses=e3:d9:ff")
    assert session.info.chip == "ATmega328P"
    assert "the target did not answer faster" in session.info.details["isp_clock"]
    assert sck_hz("STK500_2", sim_of(session).firmware.params[PARAM_SCK_DURATION]) < 32_000


def test_an_unpowered_target_is_one_clear_error():
    with pytest.raises(TargetError) as err:
        Session.open(
            "sim://stk500v2?mode=isp&chip=atmega328p&throttle=0&vtarget=0",
            ProbeOptions(protocol="stk500v2"),
        )
    text = str(err.value)
    assert "did not enter ISP programming mode" in text and "VTARGET 0.0 V" in text
    assert "\n" not in text


def test_fuses_and_lock_read_and_write(isp):
    session = isp()
    target = session.bootloader
    sim = sim_of(session)
    assert target.read_fuses() == {"lfuse": 0x62, "hfuse": 0xD9, "efuse": 0xFF}
    target.write_fuse("hfuse", 0xDE)
    target.write_fuse("efuse", 0xFD)  # only BODLEVEL2..0 exist; the rest reads 1
    target.write_fuse("lfuse", 0xFF)
    assert target.read_fuses() == {"lfuse": 0xFF, "hfuse": 0xDE, "efuse": 0xFD}
    assert sim.fuses == (0xFF, 0xDE, 0xFD)
    assert target.read_lock() == 0xFF
    target.write_lock(0x0F)  # written as 0x0F, read back as 0xCF: unused bits are 1
    assert target.read_lock() == 0xCF == sim.lock
    target.erase_chip()  # the only way back to unlocked
    assert target.read_lock() == 0xFF
    assert sim.fuses == (0xFF, 0xDE, 0xFD)  # chip erase leaves fuses alone


def test_flash_needs_a_chip_erase_before_it_is_rewritten(isp):
    session = isp()
    flash = session.memory_map.region("flash")
    first = random.Random(1).randbytes(4096)
    operations.program(session, Image([(0, first)]), verify=True)  # fresh chip: blank
    with pytest.raises(TargetError, match="not erased, and ISP cannot erase single pages"):
        operations.program(session, Image([(0, first[::-1])]))
    session.bootloader.erase_chip()
    assert sim_of(session).flash == b"\xff" * flash.size
    second = random.Random(2).randbytes(flash.size)  # the whole flash, boot section too
    operations.program(session, Image([(0, second)]), verify=True)
    assert sim_of(session).flash == second


def test_writing_what_is_already_there_or_only_clearing_bits_needs_no_erase(isp):
    session = isp()
    flash = session.memory_map.region("flash")
    operations.write_bytes(session, flash, 0x100, b"\xf0\x0f")
    operations.write_bytes(session, flash, 0x100, b"\xf0\x0f")
    operations.write_bytes(session, flash, 0x100, b"\x30\x01")
    assert sim_of(session).flash[0x100:0x102] == b"\x30\x01"


def test_program_200k_on_a_2560_through_isp(isp):
    session = isp(chip="atmega2560")
    session.bootloader.erase_chip()
    data = random.Random(3).randbytes(200 * 1024)
    operations.program(session, Image([(0, data)]), verify=True)
    assert sim_of(session).flash[: len(data)] == data


def test_eeprom_writes_only_the_pages_that_differ(isp):
    session = isp()
    eeprom = session.memory_map.region("eeprom")
    data = random.Random(4).randbytes(eeprom.size)
    for address in range(0, eeprom.size, eeprom.page_size):
        session.bootloader.write_page(eeprom, address, data[address : address + eeprom.page_size])
    sim = sim_of(session)
    assert sim.eeprom == data
    assert operations.read_memory(session, eeprom, 0, eeprom.size) == data
    operations.write_bytes(session, eeprom, 0x205, b"\x00")
    assert sim.eeprom[0x205] == 0 and sim.eeprom[:0x205] == data[:0x205]


def test_leaving_programming_mode_and_coming_back(isp):
    session = isp()
    session.bootloader.write_fuse("hfuse", 0xDE)
    session.start_application()  # releases RESET: the new fuse latches
    assert not sim_of(session).firmware.progmode
    assert operations.read_memory(session, session.memory_map.region("flash"), 0, 4)
    assert session.reconnects == 1 and sim_of(session).firmware.progmode


def test_serial_avrisp_is_a_programmer_with_half_the_sck(isp):
    session = isp("&programmer=avrisp")
    assert session.info.details["sign_on"] == "AVRISP_2"
    assert session.info.bootloader.startswith("ISP programmer AVRISP_2")
    assert session.info.details["isp_clock"].startswith("57.6 kHz")


def test_sck_arithmetic():
    assert sck_hz("STK500_2", 0) == 1_843_200 and sck_hz("STK500_2", 2) == 115_200
    assert sck_duration("STK500_2", 125_000) == 2
    assert sck_duration("STK500_2", 2_000_000) == 0
    slow = sck_duration("STK500_2", 8_000)
    assert sck_hz("STK500_2", slow) <= 8_000 < sck_hz("STK500_2", slow - 1)
    assert sck_duration("AVRISP_2", 125_000) == 2  # 57.6 kHz on the serial AVRISP
    assert sck_duration("AVRISP_MK2", 125_000) == 6
