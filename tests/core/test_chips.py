import itertools

import pytest

from flashsh import chips
from flashsh.errors import TargetError


def test_every_part_is_consistent():
    for part in chips.avr_parts().values():
        assert part.flash_size % part.flash_page == 0
        assert len(part.signature) == 3 and part.signature[0] == 0x1E
        # BOOTSZ 11, 10, 01, 00: each step doubles the boot section.
        assert all(b == a * 2 for a, b in itertools.pairwise(part.boot_sizes))


@pytest.mark.parametrize(
    ("sig", "name", "flash", "page"),
    [
        ("1e950f", "ATmega328P", 0x8000, 128),
        ("1e9705", "ATmega1284P", 0x20000, 256),
        ("1e9801", "ATmega2560", 0x40000, 256),
        ("1e9406", "ATmega168", 0x4000, 128),
    ],
)
def test_lookup_by_signature(sig, name, flash, page):
    part = chips.avr_part_by_signature(bytes.fromhex(sig))
    assert (part.name, part.flash_size, part.flash_page) == (name, flash, page)


def test_only_the_2560_needs_extended_addresses():
    needing = {p.key for p in chips.avr_parts().values() if p.needs_extended_address}
    assert needing == {"atmega2560"}


def test_lookalike_signature_is_named():
    with pytest.raises(TargetError, match="ATmega328 \\(non-P\\)") as err:
        chips.avr_part_by_signature(bytes.fromhex("1e9514"))
    assert "--chip" in str(err.value)


def test_unknown_chip_name_lists_known_ones():
    with pytest.raises(TargetError, match="atmega328p"):
        chips.avr_part("atmega9")
    assert chips.avr_part("ATmega328P").key == "atmega328p"
