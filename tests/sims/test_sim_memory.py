"""Flash and EEPROM programming rules of the chip model."""

from __future__ import annotations

import pytest

from flashsh.chips import avr_part
from flashsh.sims.memory import ChipMemory


@pytest.fixture
def mem() -> ChipMemory:
    return ChipMemory(avr_part("atmega328p"), 512, boot_label=b"BL")


def fill_page(mem: ChipMemory, address: int, data: bytes) -> None:
    for i in range(0, len(data), 2):
        mem.spm_fill(address + i, data[i], data[i + 1])


def test_blank_chip_is_erased_except_the_boot_section(mem):
    assert mem.flash[:0x7E00] == b"\xff" * 0x7E00
    assert mem.flash[0x7E00:] == b"BL" * 256
    assert mem.eeprom == b"\xff" * 1024


def test_erase_then_write_programs_a_page(mem):
    data = bytes(range(128))
    mem.spm_erase(0x100)
    fill_page(mem, 0x100, data)
    mem.spm_write(0x100)
    assert mem.flash[0x100:0x180] == data
    assert mem.stats.page_erases == 1 and mem.stats.page_writes == 1


def test_programming_without_erase_only_clears_bits(mem):
    mem.flash[0:128] = b"\x0f" * 128
    fill_page(mem, 0, b"\xf3" * 128)
    mem.spm_write(0)
    assert mem.flash[0:128] == b"\x03" * 128


def test_a_buffer_word_is_filled_once_until_the_page_write(mem):
    mem.spm_erase(0)
    mem.spm_fill(0, 0x11, 0x22)
    mem.spm_fill(0x80, 0x33, 0x44)  # same offset in the next page: ignored
    mem.spm_write(0)
    assert mem.flash[0:4] == b"\x11\x22\xff\xff"
    # The write emptied the buffer: a new fill takes.
    mem.spm_erase(0)
    mem.spm_fill(0, 0x55, 0x66)
    mem.spm_write(0)
    assert mem.flash[0:2] == b"\x55\x66"


def test_boot_lock_refuses_erase_and_write_in_the_boot_section(mem):
    assert not mem.spm_erase(0x7F00)
    fill_page(mem, 0x7F00, bytes(128))
    assert not mem.spm_write(0x7F00)
    assert mem.flash[0x7E00:] == b"BL" * 256
    assert mem.stats.boot_writes_refused == [0x7F00, 0x7F00]


def test_addresses_wrap_at_the_memory_size(mem):
    assert mem.page_of(0x8000 + 0x85) == 0x80
    mem.eeprom_write(1024 + 3, 0xAB)
    assert mem.eeprom[3] == 0xAB and mem.eeprom_read(3) == 0xAB


def test_load_places_an_image_and_refuses_the_boot_section(mem):
    mem.load([(0x10, b"abc")])
    assert mem.flash[0x10:0x13] == b"abc"
    with pytest.raises(ValueError, match="bootloader"):
        mem.load([(0x7DFF, b"xy")])
    with pytest.raises(ValueError, match="EEPROM"):
        mem.load([(1023, b"xy")], memory="eeprom")
