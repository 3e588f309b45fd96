"""The STM32 chip data (flashsh/chips/data/stm32.toml) against the fact sheet's tables,
and what the simulator's memory model makes of it."""

from __future__ import annotations

import pytest

from flashsh.chips.stm32 import stm32_by_pid, stm32_devices, stm32_part, stm32_parts
from flashsh.errors import TargetError
from flashsh.sims.stm32_flash import Stm32Memory

KIB = 1024


def test_lookup_by_name_and_by_pid():
    assert stm32_part("STM32F103C8") is stm32_part("stm32f103c8")
    chip = stm32_part("stm32f103c8")
    assert (chip.pid, chip.family, chip.flash_size) == (0x410, "f1", 64 * KIB)
    group = stm32_by_pid(0x410)
    assert group.flash_size == 128 * KIB  # the group's largest member
    with pytest.raises(TargetError, match="known parts"):
        stm32_part("stm32f999xx")
    with pytest.raises(TargetError, match="0x999"):
        stm32_by_pid(0x999)


# Fact sheet §11: PID, flash (max), erase unit, option bytes, ROM RAM, system memory.
FACT_SHEET = {
    0x412: (32, 1, 0x1FFFF800, (0x20000000, 0x200001FF), 0x1FFFF000),
    0x410: (128, 1, 0x1FFFF800, (0x20000000, 0x200001FF), 0x1FFFF000),
    0x414: (512, 2, 0x1FFFF800, (0x20000000, 0x200001FF), 0x1FFFF000),
    0x445: (32, 1, 0x1FFFF800, (0x20000000, 0x200017FF), 0x1FFFC400),
    0x448: (128, 2, 0x1FFFF800, (0x20000000, 0x200017FF), 0x1FFFC800),
    0x423: (256, None, 0x1FFFC000, (0x20000000, 0x20002FFF), 0x1FFF0000),
    0x433: (512, None, 0x1FFFC000, (0x20000000, 0x20002FFF), 0x1FFF0000),
    0x413: (1024, None, 0x1FFFC000, (0x20000000, 0x20002FFF), 0x1FFF0000),
    0x421: (512, None, 0x1FFFC000, (0x20000000, 0x20002FFF), 0x1FFF0000),
    0x467: (512, 2, 0x1FFF7800, (0x20000000, 0x20003FFF), 0x1FFF0000),
}


@pytest.mark.parametrize("pid", sorted(FACT_SHEET))
def test_devices_match_the_fact_sheet(pid):
    flash_kib, page_kib, options, rom_ram, system = FACT_SHEET[pid]
    chip = stm32_by_pid(pid)
    assert chip.flash_size == flash_kib * KIB
    assert chip.option_bytes.address == options
    assert chip.bootloader_ram == rom_ram
    assert chip.system_memory[0] == system
    if page_kib is not None:
        assert chip.erase == "page"
        assert {u.size for u in chip.erase_units} == {page_kib * KIB}
    else:
        assert chip.erase == "sector"
    # Erase units tile the flash exactly.
    assert sum(u.size for u in chip.erase_units) == chip.flash_size
    assert chip.erase_units[0].address == chip.flash_base == 0x08000000


def test_f4_sector_maps():
    f405 = stm32_part("stm32f405rg")
    starts = [u.address for u in f405.erase_units]
    assert starts[:6] == [0x08000000, 0x08004000, 0x08008000, 0x0800C000, 0x08010000, 0x08020000]
    assert starts[-1] == 0x080E0000 and len(starts) == 12
    f401 = stm32_part("stm32f401cc")
    assert [u.size // KIB for u in f401.erase_units] == [16, 16, 16, 16, 64, 128]
    # A 512 KiB part in the 1 MiB group has sectors 0-7 only.
    assert len(stm32_part("stm32f407ve").erase_units) == 8


def test_g0b1_bank_two_pages_are_numbered_from_256():
    chip = stm32_part("stm32g0b1re")
    assert chip.unit(127).address == 0x0803F800
    assert chip.unit(128) is None
    assert chip.unit(256).address == 0x08040000
    assert chip.unit(383).end == 0x08080000
    assert "bank2_first_page" in chip.unconfirmed


@pytest.mark.parametrize("pid", sorted(FACT_SHEET))
def test_rom_command_lists(pid):
    chip = stm32_by_pid(pid)
    assert {0x00, 0x01, 0x02} <= set(chip.commands)
    # AN3155 Table 2 note 3: Erase and Extended Erase never both.
    assert (0x43 in chip.commands) != (0x44 in chip.commands)
    assert chip.extended_erase == (chip.family != "f1")


def test_times_for_timeouts():
    f103 = stm32_part("stm32f103c8")
    assert f103.erase_ms(f103.erase_units[0]) == (20.0, 40.0)  # fact sheet: <= 40 ms max
    f405 = stm32_part("stm32f405rg")
    small, big = f405.erase_units[0], f405.erase_units[11]
    assert f405.erase_ms(small)[1] < f405.erase_ms(big)[1]
    # Up to ~32 s for an F4 mass erase (fact sheet §9): the max stays within it.
    assert f405.mass_erase_ms[1] <= 32000
    # 256 bytes on F1: 128 half-words of 52.5 us.
    assert f103.program_ms(256)[0] == pytest.approx(6.72)


def test_unconfirmed_values_are_marked():
    f103 = stm32_part("stm32f103c8")
    assert "page_erase_ms" in f103.unconfirmed
    assert "option_bytes.layout" in f103.unconfirmed
    assert "pid" not in f103.unconfirmed  # from the fact sheet


@pytest.mark.parametrize("key", sorted(stm32_parts()))
def test_every_part_builds_a_consistent_memory(key):
    chip = stm32_parts()[key]
    memory = Stm32Memory(chip)
    # The flash-size register reads the part's size in KiB.
    assert memory.read(chip.flash_size_register, 2) == (chip.flash_size // KIB).to_bytes(
        2, "little"
    )
    assert memory.readable(chip.uid_address, 12)
    # Fresh option bytes: no read-out protection, nothing write-protected.
    assert memory.rdp_level == 0
    assert memory.protected_units() == []
    assert len(chip.option_bytes.default) == chip.option_bytes.size
    # The ROM's own RAM is neither readable nor writable through it.
    assert not memory.readable(chip.bootloader_ram[0])
    assert not memory.writable(chip.bootloader_ram[1])


def test_write_protection_granules():
    # F1 medium density: one WRP bit per 4 pages of 1 KiB.
    md = Stm32Memory(stm32_part("stm32f103cb"))
    md.write_protect([1])
    assert md.protected_units() == [4, 5, 6, 7]
    # F1 high density: bit 31 covers everything from page 62 on (2 KiB pages).
    hd = Stm32Memory(stm32_part("stm32f103re"))
    hd.write_protect([31])
    assert hd.protected_units() == list(range(62, 256))
    # F4: one nWRP bit per sector.
    f4 = Stm32Memory(stm32_part("stm32f401cc"))
    f4.write_protect([0, 5])
    assert f4.protected_units() == [0, 5]
    assert f4.option_value(8) == 0xDE
    # G0: page ranges, two areas a bank.
    g0 = Stm32Memory(stm32_part("stm32g0b1re"))
    assert g0.write_protect([0, 1, 2, 130])
    assert g0.protected_units() == [0, 1, 2, 258]
    assert not g0.write_protect([0, 2, 4])  # three runs in bank 1 do not fit
    g0.write_unprotect()
    assert g0.protected_units() == []


def test_pid_table_has_all_required_parts():
    wanted = {0x412, 0x410, 0x414, 0x448, 0x445, 0x423, 0x433, 0x413, 0x421, 0x467}
    assert wanted <= set(stm32_devices())
