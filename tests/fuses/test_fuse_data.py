"""The fuse data itself: complete, consistent with avr.toml, and the sheet's values."""

from __future__ import annotations

import pytest

from flashsh import chips
from flashsh.chips.fuses import fuse_part, fuse_parts

CLASSIC = ("atmega168", "atmega328p", "atmega1280", "atmega1284p", "atmega2560")
USB = ("atmega32u4", "at90usb1286")


def test_every_part_in_avr_toml_has_fuse_data():
    assert set(fuse_parts()) == set(chips.avr_parts()) == set(CLASSIC + USB)


@pytest.mark.parametrize("key", CLASSIC + USB)
def test_fields_cover_exactly_the_bits_each_byte_has(key):
    for byte in fuse_part(key).all_bytes():
        covered = 0
        for field in byte.fields:
            assert not covered & field.mask, f"{byte.name}.{field.name} overlaps"
            covered |= field.mask
        assert covered == byte.mask, f"{key} {byte.name}"


@pytest.mark.parametrize("key", CLASSIC + USB)
def test_codes_fit_their_fields_and_names_are_unique(key):
    for byte in fuse_part(key).all_bytes():
        for field in byte.fields:
            if field.table is None:
                assert field.is_flag or field.name in ("CKSEL", "BODLEVEL", "BOOTSZ", "SUT")
                continue
            names = [c.name.lower() for c in field.table.choices.values() if c.name]
            assert len(names) == len(set(names)), f"{field.name}: {names}"
            for choice in field.table.choices.values():
                assert len(choice.bits) == field.width
                assert 0 <= choice.code < 1 << field.width


def test_unused_bit_masks():
    for key in CLASSIC:
        assert fuse_part(key).fuses["efuse"].mask == 0x07
    for key in USB:
        assert fuse_part(key).fuses["efuse"].mask == 0x0F
    for part in fuse_parts().values():
        assert part.lock.mask == 0x3F
        assert part.fuses["lfuse"].mask == part.fuses["hfuse"].mask == 0xFF


@pytest.mark.parametrize("key", CLASSIC + USB)
def test_boot_sizes_agree_with_avr_toml(key):
    part = chips.avr_part(key)
    byte = next(b for b in fuse_part(key).fuses.values() if "BOOTSZ" in [f.name for f in b.fields])
    field = next(f for f in byte.fields if f.name == "BOOTSZ")
    # avr.toml lists BOOTSZ 11, 10, 01, 00 in bytes.
    for code, size in zip((3, 2, 1, 0), part.boot_sizes, strict=True):
        choice = field.table.choices[code]
        assert choice.words * 2 == size
        assert choice.start == part.flash_size - size


def test_boot_size_lives_in_the_extended_fuse_only_on_the_168():
    assert [f.name for f in fuse_part("atmega168").fuses["efuse"].fields] == ["BOOTSZ", "BOOTRST"]
    assert "BODLEVEL" in [f.name for f in fuse_part("atmega168").fuses["hfuse"].fields]
    for key in CLASSIC[1:] + USB:
        assert "BOOTSZ" in [f.name for f in fuse_part(key).fuses["hfuse"].fields]


@pytest.mark.parametrize(
    ("key", "lfuse", "hfuse", "efuse"),
    [
        ("atmega168", 0x62, 0xDF, 0xF9),
        ("atmega328p", 0x62, 0xD9, 0xFF),
        ("atmega1280", 0x62, 0x99, 0xFF),
        ("atmega2560", 0x62, 0x99, 0xFF),
        ("atmega1284p", 0x62, 0x99, 0xFF),
        ("at90usb1286", 0x5E, 0x99, 0xF3),
        ("atmega32u4", 0x52, 0x99, 0xF3),
    ],
)
def test_factory_values(key, lfuse, hfuse, efuse):
    preset = fuse_part(key).presets["factory"]
    assert preset.values == {"lfuse": lfuse, "hfuse": hfuse, "efuse": efuse}
    assert fuse_part(key).lock.factory == 0xFF


def test_unconfirmed_facts_are_marked():
    assert fuse_part("atmega32u4").presets["factory"].unconfirmed
    assert fuse_part("at90usb1286").presets["factory"].unconfirmed
    assert fuse_part("atmega1284p").presets["factory"].unconfirmed
    assert fuse_part("atmega328p").presets["factory"].unconfirmed is None
    usb = fuse_part("atmega32u4").fuses
    assert next(f for f in usb["lfuse"].fields if f.name == "CKSEL").table.unconfirmed
    assert next(f for f in usb["efuse"].fields if f.name == "BODLEVEL").table.unconfirmed


@pytest.mark.parametrize(
    ("key", "name", "values", "lock_after"),
    [
        ("atmega2560", "klipper", (0xFF, 0xD8, 0xFD), 0x0F),
        ("atmega1280", "klipper", (0xFF, 0xDA, 0xF5), 0x0F),
        ("atmega1284p", "klipper", (0xFF, 0xDE, 0xFD), 0x0F),
        ("atmega168", "klipper", (0xFF, 0xDD, 0x04), 0x0F),
        ("atmega328p", "arduino", (0xFF, 0xDE, 0xFD), 0x0F),
        ("atmega2560", "arduino", (0xFF, 0xD8, 0xFD), 0x0F),
        ("atmega32u4", "arduino", (0xFF, 0xD8, 0xCB), 0x2F),
    ],
)
def test_presets(key, name, values, lock_after):
    preset = fuse_part(key).presets[name]
    assert preset.values == dict(zip(("lfuse", "hfuse", "efuse"), values, strict=True))
    assert preset.lock_after == lock_after


def test_lock_presets():
    presets = fuse_part("atmega2560").lock_presets
    assert presets["unlock"].values == {"lock": 0x3F}
    assert presets["bootloader-protect"].values == {"lock": 0x0F}


def test_unknown_chip_lists_the_known_ones():
    from flashsh.errors import TargetError

    with pytest.raises(TargetError, match="unknown chip") as err:
        fuse_part("atmega9")
    assert "atmega2560" in str(err.value)
