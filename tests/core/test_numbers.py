import pytest

from flashsh.numbers import hexaddr, human_size, parse_int


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0x1F000", 0x1F000),
        ("4096", 4096),
        ("32K", 32768),
        ("1m", 1 << 20),
        ("0b101", 5),
        ("0x7e_00", 0x7E00),
    ],
)
def test_parse_int_accepts_the_usual_spellings(text, value):
    assert parse_int(text) == value


def test_parse_int_hex_ending_in_k_like_digit_is_not_a_suffix():
    # 0xB is hex; only decimal numbers take K/M.
    assert parse_int("0x1b") == 0x1B


def test_parse_int_rejects_garbage_with_the_text():
    with pytest.raises(ValueError, match="'zz'"):
        parse_int("zz")


def test_hexaddr_and_sizes():
    assert hexaddr(0x7E00) == "0x7e00"
    assert hexaddr(0x1F000) == "0x0001f000"
    assert human_size(32768) == "32 KiB"
    assert human_size(100) == "100 bytes"
