"""Decoding the values the Klipper guide and Arduino write, field by field."""

from __future__ import annotations

import pytest

from flashsh.chips.fuses import fuse_part
from flashsh.fuses import decode, describe, diff_text, masked_equal


def fields(chip: str, byte: str, value: int) -> dict:
    return decode(fuse_part(chip).byte(byte), value)["fields"]


def test_atmega2560_klipper_values():
    h = fields("atmega2560", "hfuse", 0xD8)
    assert (h["BOOTSZ"]["code"], h["BOOTSZ"]["words"], h["BOOTSZ"]["start"]) == (
        "00",
        4096,
        0x3E000,
    )
    assert h["BOOTSZ"]["bytes"] == 8192
    assert h["BOOTRST"]["on"] is True
    assert h["SPIEN"]["on"] is True
    assert not any(h[n]["on"] for n in ("OCDEN", "JTAGEN", "WDTON", "EESAVE"))
    lo = fields("atmega2560", "lfuse", 0xFF)
    assert lo["CKSEL"]["name"] == "crystal-8-16mhz"
    assert "65 ms" in lo["SUT"]["meaning"]
    assert lo["CKDIV8"]["on"] is False and lo["CKOUT"]["on"] is False
    assert fields("atmega2560", "efuse", 0xFD)["BODLEVEL"]["volts"] == 2.7


def test_atmega1280_klipper_values():
    h = fields("atmega1280", "hfuse", 0xDA)
    assert (h["BOOTSZ"]["words"], h["BOOTSZ"]["start"], h["BOOTRST"]["on"]) == (2048, 0x1F000, True)
    # 0xF5 has unused bit 3 written as 0; only BODLEVEL counts.
    assert fields("atmega1280", "efuse", 0xF5)["BODLEVEL"]["name"] == "2.7V"


def test_atmega1284p_klipper_values():
    h = fields("atmega1284p", "hfuse", 0xDE)
    assert (h["BOOTSZ"]["words"], h["BOOTSZ"]["start"], h["BOOTRST"]["on"]) == (512, 0x1FC00, True)
    assert fields("atmega1284p", "efuse", 0xFD)["BODLEVEL"]["name"] == "2.7V"


def test_atmega168_klipper_values():
    e = fields("atmega168", "efuse", 0x04)
    assert (e["BOOTSZ"]["code"], e["BOOTSZ"]["words"], e["BOOTSZ"]["start"]) == ("10", 256, 0x3E00)
    assert e["BOOTRST"]["on"] is True
    # What the chip reads back (unused bits as 1) decodes the same.
    assert fields("atmega168", "efuse", 0xFC) == e
    h = fields("atmega168", "hfuse", 0xDD)
    assert h["BODLEVEL"]["name"] == "2.7V"
    assert (h["RSTDISBL"]["on"], h["DWEN"]["on"], h["SPIEN"]["on"]) == (False, False, True)


def test_uno_and_leonardo_values():
    h = fields("atmega328p", "hfuse", 0xDE)
    assert (h["BOOTSZ"]["name"], h["BOOTSZ"]["start"]) == ("256W", 0x7E00)
    leo = fields("atmega32u4", "hfuse", 0xD8)
    assert (leo["BOOTSZ"]["words"], leo["BOOTSZ"]["start"]) == (2048, 0x7000)
    e = fields("atmega32u4", "efuse", 0xCB)
    assert e["HWBE"]["on"] is False
    # The USB parts' brown-out levels are not confirmed: shown raw, never guessed.
    assert e["BODLEVEL"]["code"] == "011" and e["BODLEVEL"]["name"] is None
    assert "not decoded" in e["BODLEVEL"]["meaning"]


def test_factory_clock_is_the_internal_rc_divided_by_8():
    lo = fields("atmega328p", "lfuse", 0x62)
    assert (lo["CKSEL"]["name"], lo["CKDIV8"]["on"]) == ("rc-8mhz", True)
    assert "datasheet" in lo["SUT"]["meaning"]  # SUT under the RC is not decoded here


def test_lock_bytes():
    lock = fields("atmega2560", "lock", 0x0F)
    assert [lock[n]["name"] for n in ("BLB1", "BLB0", "LB")] == ["mode3", "mode1", "mode1"]
    assert fields("atmega2560", "lock", 0xCF) == lock
    assert fields("atmega32u4", "lock", 0x2F)["BLB1"]["name"] == "mode2"


def test_masked_compare():
    efuse168 = fuse_part("atmega168").byte("efuse")
    assert masked_equal(efuse168, 0x04, 0xFC)
    assert not masked_equal(efuse168, 0x04, 0xFD)
    assert masked_equal(fuse_part("atmega328p").lock, 0x0F, 0xCF)
    assert masked_equal(fuse_part("atmega32u4").byte("efuse"), 0xCB, 0xFB)
    assert not masked_equal(fuse_part("atmega32u4").byte("efuse"), 0xCB, 0xC3)
    assert not masked_equal(fuse_part("atmega328p").byte("hfuse"), 0xDE, 0x5E)


def test_describe_shows_every_field_and_the_unused_bits():
    text = describe(fuse_part("atmega168").byte("efuse"), 0xFC)
    lines = text.splitlines()
    assert lines[0].startswith("efuse 0xfc  1111 1100") and "bits 7:3 unused" in lines[0]
    assert "BOOTSZ" in lines[1] and "256W" in lines[1] and "0x3e00" in lines[1]
    assert "BOOTRST" in lines[2] and " on " in lines[2]
    assert len(lines) == 3


def test_unconfirmed_values_say_so():
    text = describe(fuse_part("atmega328p").byte("efuse"), 0xFE)
    assert "1.8 V" in text and "UNCONFIRMED" in text


@pytest.mark.parametrize(
    ("chip", "byte", "old", "new", "expect"),
    [
        (
            "atmega168",
            "efuse",
            0xF9,
            0x04,
            ["BOOTSZ   00 -> 10", "BOOTRST  1 -> 0", "11111 -> 00000"],
        ),
        ("atmega328p", "hfuse", 0xD9, 0xDE, ["BOOTSZ   00 -> 11", "256W"]),
        ("atmega328p", "lfuse", 0x62, 0xFF, ["CKDIV8   0 -> 1", "CKSEL    0010 -> 1111"]),
    ],
)
def test_diff_names_each_changed_field_with_its_bits(chip, byte, old, new, expect):
    text = diff_text(fuse_part(chip).byte(byte), old, new)
    assert text.splitlines()[0].startswith(f"{byte:<6}0x{old:02x} -> 0x{new:02x}")
    for snippet in expect:
        assert snippet in text, text
    # Unchanged fields are not listed.
    assert "SPIEN" not in text and "EESAVE" not in text


def test_diff_of_equal_values():
    assert diff_text(fuse_part("atmega328p").byte("hfuse"), 0xDE, 0xDE).endswith("unchanged")
