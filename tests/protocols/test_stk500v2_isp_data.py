"""The ISP programming data (flashsh/chips/data/avr_isp.toml) against the fact sheet."""

from __future__ import annotations

import pytest

from flashsh import chips
from flashsh.chips.isp import isp_part, isp_parts
from flashsh.errors import TargetError


def test_every_avr_part_has_isp_data_that_agrees_with_avr_toml():
    assert set(isp_parts()) == set(chips.avr_parts())
    for key, part in chips.avr_parts().items():
        isp = isp_part(key)
        assert isp.chip_erase_ms == part.chip_erase_ms, key
        # Only flash past 64 K words needs Load Extended Address (bit 31 of LOAD_ADDRESS).
        assert isp.flash.load_extended_address == part.needs_extended_address, key
        assert not isp.eeprom.load_extended_address


def test_enter_progmode_values_avrdude_uses_for_all_seven_parts():
    for isp in isp_parts().values():
        p = isp.enter_progmode
        timing = (p.timeout, p.stab_delay, p.cmdexe_delay, p.synch_loops, p.byte_delay)
        assert timing == (200, 100, 25, 32, 0)
        assert (p.poll_value, p.poll_index, p.command) == (0x53, 3, bytes.fromhex("AC530000"))
        assert (isp.leave_pre_delay, isp.leave_post_delay) == (1, 1)


def test_page_write_parameters():
    m328 = isp_part("atmega328p")
    # The fact sheet's sample page write: 13 00 80 C1 0A 40 4C 20 ...
    assert (m328.flash.mode | 0x80, m328.flash.delay_ms) == (0xC1, 0x0A)
    assert (m328.flash.load_page, m328.flash.write_page, m328.flash.read) == (0x40, 0x4C, 0x20)
    assert (m328.eeprom.load_page, m328.eeprom.write_page, m328.eeprom.read) == (0xC1, 0xC2, 0xA0)
    assert m328.eeprom.delay_ms == 20 and isp_part("atmega2560").eeprom.delay_ms == 10
    assert isp_part("at90usb1286").flash.delay_ms == 6 == isp_part("atmega32u4").flash.delay_ms
    assert isp_part("atmega1284p").chip_erase_ms == 55


@pytest.mark.parametrize(
    ("key", "value", "sent"),
    [
        ("atmega328p", 0xFD, 0x05),  # v AND 0x07
        ("atmega2560", 0xFD, 0x05),
        ("atmega1284p", 0xFD, 0xFD),  # 0xF8 OR (v AND 0x07)
        ("at90usb1286", 0xF3, 0x03),  # v AND 0x0F
        ("atmega32u4", 0xF3, 0xF3),  # 0xF0 OR (v AND 0x0F)
    ],
)
def test_extended_fuse_write_sends_only_the_parts_bits(key, value, sent):
    efuse = isp_part(key).fuses["efuse"]
    assert efuse.write_instruction(value) == bytes([0xAC, 0xA4, 0x00, sent])


def test_fuse_lock_signature_instructions():
    isp = isp_part("atmega328p")
    assert isp.fuses["lfuse"].read == bytes.fromhex("50000000")
    assert isp.fuses["hfuse"].read == bytes.fromhex("58080000")
    assert isp.fuses["efuse"].read == bytes.fromhex("50080000")
    assert isp.fuses["hfuse"].write_instruction(0xDE) == bytes.fromhex("ACA800DE")
    assert isp.lock.read == bytes.fromhex("58000000")
    assert isp.lock.write_instruction(0x0F) == bytes.fromhex("ACE000CF")
    assert isp.signature_instruction(2) == bytes.fromhex("30000200")
    assert isp.calibration_read == bytes.fromhex("38000000")
    assert isp.chip_erase_command == bytes.fromhex("AC800000")


def test_unknown_part_is_named():
    with pytest.raises(TargetError, match="no ISP programming data for atmega8"):
        isp_part("atmega8")
