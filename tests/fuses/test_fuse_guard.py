"""The brick guard: each rule refuses in one line, --force lets it through."""

from __future__ import annotations

import pytest

from flashsh.chips.fuses import fuse_part, fuse_parts
from flashsh.fuses import FORCE_HINT, FuseGuardError, check_change, guard


def judge(chip: str, byte: str, old: int, new: int, force: bool = False) -> list[str]:
    part = fuse_part(chip)
    return guard(part, [(part.byte(byte), old, new)], force=force)


REFUSED = [
    # (chip, byte, old, new, words the message must hold)
    ("atmega328p", "hfuse", 0xD9, 0xF9, "unprogram SPIEN: ISP programming is switched off"),
    ("atmega328p", "hfuse", 0xD9, 0x59, "program RSTDISBL: RESET becomes an I/O pin"),
    ("atmega168", "hfuse", 0xDD, 0x5D, "program RSTDISBL"),
    ("atmega328p", "hfuse", 0xD9, 0x99, "program DWEN: debugWIRE takes over RESET"),
    ("atmega2560", "hfuse", 0xD8, 0xC8, "program WDTON: the watchdog can never be switched off"),
    ("atmega328p", "lfuse", 0xFF, 0xF0, "XTAL1: on a board with a crystal it appears dead"),
    ("atmega328p", "lfuse", 0x62, 0x60, "external clock signal on XTAL1"),
    ("atmega328p", "lfuse", 0x62, 0x63, "ISP then needs SCK below 32 kHz"),
    ("atmega328p", "lfuse", 0x62, 0xFF, "without a crystal of that range"),  # RC -> crystal
    ("atmega328p", "lfuse", 0x62, 0xF7, "without a crystal of that range"),  # RC -> full swing
    ("atmega2560", "lfuse", 0xFF, 0xE2, "leaves its crystal and runs on the internal RC"),
    ("atmega328p", "lfuse", 0xFF, 0xF5, "32.768 kHz crystal"),
    ("atmega328p", "lfuse", 0x62, 0x61, "gives this code no meaning"),  # CKSEL 0001
    ("atmega32u4", "lfuse", 0xFF, 0xF3, "cannot tell which clock"),  # undecoded on the U4
    ("atmega328p", "efuse", 0xFD, 0xFB, "reserved brown-out code"),
    ("atmega2560", "lock", 0xFF, 0xFE, "freezes the fuses"),  # LB mode 2
    ("atmega2560", "lock", 0xFF, 0xFC, "stops ISP programming and reading"),  # LB mode 3
    ("atmega2560", "lock", 0xFF, 0xFB, "stops the bootloader from writing the application"),
    ("atmega2560", "lock", 0xFF, 0xF3, "from writing and from reading"),  # BLB0 mode 3
    ("atmega2560", "lock", 0xFF, 0xF7, "from reading (verifying)"),  # BLB0 mode 4
]


@pytest.mark.parametrize(("chip", "byte", "old", "new", "words"), REFUSED)
def test_refused_unless_forced(chip, byte, old, new, words):
    with pytest.raises(FuseGuardError) as err:
        judge(chip, byte, old, new)
    message = str(err.value)
    assert words in message
    assert f"{byte} 0x{old:02x} -> 0x{new:02x}" in message
    assert message.startswith("refused: ") and message.endswith(f"({FORCE_HINT})")
    assert "\n" not in message
    forced = judge(chip, byte, old, new, force=True)
    assert any(w.startswith("forced: ") and words in w for w in forced)


ALLOWED = [
    ("atmega2560", "lock", 0xFF, 0x0F),  # BLB1 mode 3: the usual bootloader protection
    ("atmega32u4", "lock", 0xFF, 0x2F),  # BLB1 mode 2 (Leonardo)
    ("atmega2560", "hfuse", 0x99, 0xD8),  # JTAG off, BOOTRST on
    ("atmega328p", "hfuse", 0xD9, 0xD1),  # EESAVE on
    ("atmega328p", "lfuse", 0xFF, 0xFE),  # same crystal, other start-up group
    ("atmega328p", "lfuse", 0xFF, 0xCF),  # SUT only
    ("atmega328p", "efuse", 0xFF, 0xFD),  # BOD 2.7 V
    ("atmega168", "efuse", 0xF9, 0x04),  # unused bits written as 0
    ("atmega32u4", "efuse", 0xF3, 0xCB),  # HWBE off
]


@pytest.mark.parametrize(("chip", "byte", "old", "new"), ALLOWED)
def test_allowed(chip, byte, old, new):
    part = fuse_part(chip)
    assert check_change(part, part.byte(byte), old, new).refusals == []


WARNED = [
    ("atmega328p", "efuse", 0xFD, 0xFC, "holds the chip in reset below 4.3 V"),
    ("atmega328p", "lfuse", 0xFF, 0x7F, "divided by 8"),
    ("atmega328p", "hfuse", 0xDE, 0xDF, "serial bootloader becomes unreachable"),
    ("atmega2560", "hfuse", 0xD8, 0x58, "on-chip debug stays active"),
    ("atmega328p", "lfuse", 0xFF, 0xF7, "check that it suits the oscillator"),  # range change
    ("atmega32u4", "efuse", 0xFB, 0xF9, "not decoded for ATmega32U4"),
]


@pytest.mark.parametrize(("chip", "byte", "old", "new", "words"), WARNED)
def test_warned_but_not_refused(chip, byte, old, new, words):
    warnings = judge(chip, byte, old, new)
    assert any(words in w for w in warnings), warnings


def test_settings_the_chip_already_has_are_not_judged_again():
    # WDTON is already on: writing the byte with another change keeps it on, no refusal.
    assert judge("atmega2560", "hfuse", 0xC8, 0xC0) == []
    # Same clock source class (RC stays RC) while CKDIV8 goes off.
    assert judge("atmega328p", "lfuse", 0x62, 0xE2) == []


def test_no_setting_text_splits_the_line():
    # Refusals are joined with "; ", so the data's texts must not contain one.
    for part in fuse_parts().values():
        for byte in part.all_bytes():
            for field in byte.fields:
                texts = [field.danger_on, field.danger_off, field.warn_on, field.warn_off]
                if field.table:
                    texts += [c.danger for c in field.table.choices.values()]
                assert not any(t and ";" in t for t in texts), field.name
        assert not any(";" in c.risk for c in part.clock_classes.values())


def test_several_refusals_in_one_line():
    part = fuse_part("atmega328p")
    changes = [(part.byte("hfuse"), 0xD9, 0x19), (part.byte("lfuse"), 0xFF, 0xF0)]
    with pytest.raises(FuseGuardError) as err:
        guard(part, changes)
    message = str(err.value)
    assert "RSTDISBL" in message and "DWEN" in message and "CKSEL" in message
    assert message.count("; ") == 2 and "\n" not in message


def test_extra_refusals_from_the_caller():
    part = fuse_part("atmega32u4")
    with pytest.raises(FuseGuardError, match="preset factory is not confirmed"):
        guard(part, [], refusals=["preset factory is not confirmed"])
