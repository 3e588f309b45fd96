"""FIELD=VALUE: every accepted spelling, and an error for each kind of mistake."""

from __future__ import annotations

import pytest

from flashsh.chips.fuses import fuse_part
from flashsh.errors import TargetError
from flashsh.fuses import apply_assignments, parse_assignment

UNO = {"lfuse": 0xFF, "hfuse": 0xDE, "efuse": 0xFD}


def edit(chip: str, current: dict, *texts: str) -> dict:
    return apply_assignments(fuse_part(chip).fuses.values(), current, texts)


@pytest.mark.parametrize(
    "text", ["BOOTSZ=1024W", "bootsz=1024w", "BOOTSZ=2K", "BOOTSZ=2048B", "BOOTSZ=0b01", "BOOTSZ=1"]
)
def test_boot_size_spellings(text):
    # 328P: 1024 words is BOOTSZ 01; hfuse 0xDE -> 0xDA.
    assert edit("atmega328p", UNO, text) == {**UNO, "hfuse": 0xDA}


def test_single_bits_by_datasheet_name():
    assert edit("atmega328p", UNO, "BOOTSZ1=0") == {**UNO, "hfuse": 0xDA}
    assert edit("atmega328p", UNO, "CKSEL0=0") == {**UNO, "lfuse": 0xFE}


@pytest.mark.parametrize(
    ("text", "lfuse"),
    [
        ("CKDIV8=on", 0x7F),
        ("CKDIV8=programmed", 0x7F),
        ("CKDIV8=0", 0x7F),
        ("CKDIV8=off", 0xFF),
        ("CKDIV8=unprogrammed", 0xFF),
        ("CKDIV8=1", 0xFF),
        ("CKOUT=ON", 0xBF),
    ],
)
def test_flags_programmed_means_on(text, lfuse):
    assert edit("atmega328p", UNO, text)["lfuse"] == lfuse


@pytest.mark.parametrize("text", ["BODLEVEL=2.7V", "BODLEVEL=2.7", "BODLEVEL=0b101", "BODLEVEL=5"])
def test_brown_out_spellings(text):
    start = {**UNO, "efuse": 0xFF}
    assert edit("atmega328p", start, text)["efuse"] == 0xFD


def test_clock_names_and_several_bytes_at_once():
    new = edit("atmega328p", UNO, "CKSEL=rc-8mhz", "SUT=0b10", "BODLEVEL=off", "EESAVE=on")
    assert new == {"lfuse": 0xE2, "hfuse": 0xD6, "efuse": 0xFF}


def test_boot_size_goes_to_the_extended_fuse_on_the_168():
    start = {"lfuse": 0xFF, "hfuse": 0xDD, "efuse": 0xF9}
    new = edit("atmega168", start, "BOOTSZ=256W", "BOOTRST=on")
    assert new == {**start, "efuse": 0xFC}
    assert parse_assignment(fuse_part("atmega168").fuses.values(), "BOOTSZ=128W").raw == 0b11


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("BOOTSZ", "is not FIELD=VALUE"),
        ("=1", "is not FIELD=VALUE"),
        ("BOOTSZ=", "is not FIELD=VALUE"),
        ("BOOTSIZE=1K", "no fuse field 'BOOTSIZE'"),
        ("BOOTSZ=128W", "no such BOOTSZ value"),  # a 168 size, not a 328P one
        ("BOOTSZ=4", "no such BOOTSZ value"),
        ("BOOTSZ=-1", "no such BOOTSZ value"),
        ("BOOTSZ=big", "no such BOOTSZ value"),
        ("BOOTSZ=1025B", "no such BOOTSZ value"),  # not a whole number of words
        ("BOOTSZ=10", "ambiguous"),
        ("CKSEL=1111", "ambiguous"),
        ("CKDIV8=maybe", "takes on or off"),
        ("CKDIV8=2", "takes on or off"),
        ("BOOTSZ1=on", "single bit takes 0 or 1"),
        ("BOOTSZ2=0", "no fuse field"),  # BOOTSZ has bits 0 and 1 only
        ("HWBE=on", "no fuse field"),  # only the USB parts have it
        ("BLB0=mode1", "no fuse field"),  # lock bits are not fuses
    ],
)
def test_mistakes(text, message):
    with pytest.raises(TargetError, match=message) as err:
        edit("atmega328p", UNO, text)
    assert "\n" not in str(err.value)


def test_hints_list_what_is_possible():
    with pytest.raises(TargetError) as err:
        edit("atmega328p", UNO, "BOOTSIZE=1K")
    assert "BOOTSZ" in err.value.hint and "CKDIV8" in err.value.hint
    with pytest.raises(TargetError) as err:
        edit("atmega328p", UNO, "BOOTSZ=3K")
    assert err.value.hint == "values: 256W, 512W, 1024W, 2048W, or a code 0b00..0b11"
    with pytest.raises(TargetError) as err:
        edit("atmega328p", UNO, "BOOTSZ=11")
    assert "0b11" in err.value.hint


@pytest.mark.parametrize(
    "texts", [("BOOTSZ=1K", "BOOTSZ=2K"), ("BOOTSZ=1K", "BOOTSZ0=1"), ("CKSEL0=1", "CKSEL=0b1111")]
)
def test_a_field_given_twice(texts):
    with pytest.raises(TargetError, match="given twice"):
        edit("atmega328p", UNO, *texts)


def test_two_different_bits_of_one_field_are_fine():
    assert edit("atmega328p", UNO, "BOOTSZ1=0", "BOOTSZ0=0")["hfuse"] == 0xD8
