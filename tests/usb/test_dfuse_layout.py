"""DfuSe memory-layout strings: every verbatim string of the DFU fact sheet (dfu.md §4.4)
and the quirks seen in the wild."""

from __future__ import annotations

import pytest

from flashsh.chips.dfuse import dfuse_chips, identify_rom
from flashsh.errors import ProtocolError
from flashsh.protocols.dfu_layout import parse_layout

K = 1024

# (string, name, [(start, count, size, flags), ...]) for each verbatim string of §4.4.
VERBATIM = [
    ("@Internal Flash  /0x08000000/04*016Kg,01*064Kg,07*128Kg", "Internal Flash  ",
     [(0x08000000, 4, 16 * K, 7), (0x08010000, 1, 64 * K, 7), (0x08020000, 7, 128 * K, 7)]),
    ("@Option Bytes  /0x1FFFC000/01*016 g", "Option Bytes  ", [(0x1FFFC000, 1, 16, 7)]),
    ("@Option Bytes  /0x1FFFC000/01*016 e", "Option Bytes  ", [(0x1FFFC000, 1, 16, 5)]),
    ("@OTP Memory /0x1FFF7800/01*512 g,01*016 g", "OTP Memory ",
     [(0x1FFF7800, 1, 512, 7), (0x1FFF7A00, 1, 16, 7)]),
    # dfu-util treats "Device Feature" as readable and writable, whatever the letter.
    ("@Device Feature/0xFFFF0000/01*004 g", "Device Feature", [(0xFFFF0000, 1, 4, 5)]),
    ("@Internal Flash  /0x08000000/04*016Kg,01*064Kg,03*128Kg", "Internal Flash  ",
     [(0x08000000, 4, 16 * K, 7), (0x08010000, 1, 64 * K, 7), (0x08020000, 3, 128 * K, 7)]),
    ("@Internal Flash  /0x08000000/04*016Kg,01*64Kg,03*128Kg", "Internal Flash  ",
     [(0x08000000, 4, 16 * K, 7), (0x08010000, 1, 64 * K, 7), (0x08020000, 3, 128 * K, 7)]),
    ("@Option Bytes   /0x1FFF7800/01*048 e/0x1FFFF800/01*048 e", "Option Bytes   ",
     [(0x1FFF7800, 1, 48, 5), (0x1FFFF800, 1, 48, 5)]),
    ("@Internal Flash  /0x08000000/128*002Kg", "Internal Flash  ",
     [(0x08000000, 128, 2 * K, 7)]),
    ("@Option Bytes  /0x1FFFF800/01*016 g", "Option Bytes  ", [(0x1FFFF800, 1, 16, 7)]),
    ("@Internal Flash  /0x08000000/032*0001Kg", "Internal Flash  ",
     [(0x08000000, 32, 1 * K, 7)]),
    ("@Option Bytes  /0x1FFFF800/01*016 e", "Option Bytes  ", [(0x1FFFF800, 1, 16, 5)]),
    ("@Internal Flash  /0x08000000/128*0002Kg", "Internal Flash  ",
     [(0x08000000, 128, 2 * K, 7)]),
    ("/0x08000000/064*0002Kg", "", [(0x08000000, 64, 2 * K, 7)]),
    ("01*016 e", None, None),  # only a fragment in the table: not a layout
]  # fmt: skip


@pytest.mark.parametrize(("text", "name", "segments"), VERBATIM)
def test_verbatim_strings(text, name, segments):
    if name is None:
        with pytest.raises(ProtocolError, match="not a DfuSe memory layout"):
            parse_layout(text)
        return
    layout = parse_layout(text)
    assert layout.raw_name == name
    got = [(s.start, s.count, s.size, s.flags) for s in layout.segments]
    assert got == segments
    assert layout.notes == ()


def test_counts_with_leading_zeros_are_decimal():
    # 016 read as octal would be 14; 0001 and 0002 likewise must stay 1 and 2.
    layout = parse_layout("@Internal Flash  /0x08000000/04*016Kg,01*064Kg,07*128Kg")
    assert layout.size == 1024 * K
    assert [hi - lo for lo, hi in layout.units(0x08000000, 0x08000000 + 20 * K)] == [16 * K] * 2


def test_units_cover_exactly_the_bytes_asked_for_across_segment_boundaries():
    layout = parse_layout("@Internal Flash  /0x08000000/04*016Kg,01*064Kg,07*128Kg")
    units = layout.units(0x0800FFFF, 0x08020001)
    assert units == [(0x0800C000, 0x08010000), (0x08010000, 0x08020000),
                     (0x08020000, 0x08040000)]  # fmt: skip


def test_two_address_groups_stay_apart():
    layout = parse_layout("@Option Bytes   /0x1FFF7800/01*048 e/0x1FFFF800/01*048 e")
    assert layout.groups() == [(0x1FFF7800, 0x1FFF7830), (0x1FFFF800, 0x1FFFF830)]
    assert layout.segment_at(0x1FFF7900) is None


@pytest.mark.parametrize(
    ("text", "size", "flags", "note"),
    [
        ("@F7 /0x08000000/01*528e", 528, 5, "no multiplier"),
        ("@F7 /0x08000000/01*048 e", 48, 5, None),
        ("@F7 /0x08000000/01*016Kg", 16 * K, 7, None),
        ("@F7 /0x08000000/01*016 Kg", 16 * K, 7, None),
        ("@F7 /0x08000000/01*1Mg", 1024 * K, 7, None),
        ("@F7 /0x08000000/01*016K", 16 * K, 0, "no type letter"),
        ("@F7 /0x08000000/04*016Ka\0\0", 64 * K, 1, None),
    ],
)
def test_quirks_in_the_wild_are_tolerated(text, size, flags, note):
    layout = parse_layout(text)
    assert layout.size == size
    assert layout.segments[0].flags == flags
    assert any(note in n for n in layout.notes) if note else layout.notes == ()


def test_a_segment_without_count_is_skipped_but_the_rest_is_kept():
    layout = parse_layout("@X /0x08000000/016Kg,02*002Kg")
    assert [(s.start, s.count, s.size) for s in layout.segments] == [(0x08000000, 2, 2 * K)]
    assert "not COUNT*SIZE" in layout.notes[0]


def test_a_read_only_bootloader_prefix_moves_the_writable_start():
    layout = parse_layout("@Internal Flash   /0x08000000/03*016Ka,01*016Kg,01*064Kg,07*128Kg")
    assert layout.writable_prefix_end() == 0x0800C000
    assert "3x16K (r)" in layout.summary()


@pytest.mark.parametrize("text", ["@Internal Flash", "@Flash /nothex/04*016Kg", "@X/0x0800/"])
def test_strings_naming_no_memory_are_refused(text):
    with pytest.raises(ProtocolError):
        parse_layout(text)


@pytest.mark.parametrize(
    ("text", "bcd", "name"),
    [
        ("@Internal Flash  /0x08000000/04*016Kg,01*064Kg,07*128Kg", 0x2100,
         "STM32F405/407/415/417"),
        ("@Internal Flash  /0x08000000/064*0002Kg", 0x2200, "STM32F072/F070xB/F071"),
        ("@Internal Flash  /0x08000000/128*002Kg", 0x2000, "STM32F105/107"),
        ("@Internal Flash  /0x08000000/128*0002Kg", 0x2200, "STM32F303xB/C"),
        ("@Internal Flash  /0x08000000/04*016Kg,01*064Kg,03*128Kg", 0x2200,
         "STM32F401xD/E, F411xE or F446"),
        # Same flash, unknown bcdDevice: both candidates are named.
        ("@Internal Flash  /0x08000000/04*016Kg,01*64Kg,03*128Kg", 0x9999,
         "STM32F401xD/E, F411xE or F446 or STM32F722/723/732/733"),
        ("@Internal Flash  /0x08000000/256*02Kg", 0x2200, "STM32 with 512 KiB flash (256x2K)"),
    ],
)  # fmt: skip
def test_the_chip_is_named_by_flash_layout_and_bcd_device(text, bcd, name):
    assert identify_rom(parse_layout(text), bcd)[0] == name


def test_every_table_layout_parses_cleanly():
    for chip in dfuse_chips().values():
        for text in chip.alts:
            assert parse_layout(text).notes == (), (chip.key, text)


def test_another_vendors_dfuse_device_is_not_called_an_stm32():
    flash = parse_layout("@Internal Flash  /0x08000000/064*0002Kg")
    assert identify_rom(flash, 0x2200, st_rom=False) == (
        "a chip with 128 KiB flash (64x2K)",
        None,
    )
