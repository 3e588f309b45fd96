"""docs/fuses.md agrees with the data and with what the commands print."""

from __future__ import annotations

import re

import pytest
from fuse_doc import DOC, current, generated

from flashsh.chips.fuses import fuse_parts


def test_generated_tables_match_the_data():
    # Fix with: python3 tests/fuses/fuse_doc.py
    assert current(DOC.read_text(encoding="utf-8")) == generated()


def test_tables_name_every_chip_and_preset():
    text = generated()
    for part in fuse_parts().values():
        assert f"### {part.name}\n" in text
        for name in part.presets:
            assert f"| `{name}` |" in text


def _example(command: str) -> list[str]:
    """The lines the doc shows under ``... > COMMAND``, minus the question and its answer."""
    text = DOC.read_text(encoding="utf-8")
    block = re.search(rf"> {re.escape(command)}\n(.*?)```", text, re.S)
    assert block, f"no example of {command!r} in {DOC.name}"
    return [line for line in block.group(1).splitlines() if "[y/N]" not in line]


@pytest.mark.parametrize(
    ("chip", "fuses", "command"),
    [
        ("atmega2560", {"lfuse": 0xFF, "hfuse": 0xD8, "efuse": 0xFD}, "fuse read"),
        (
            "atmega328p",
            {"lfuse": 0xFF, "hfuse": 0xDE, "efuse": 0xFD},
            "fuse set BOOTSZ=1024W EESAVE=on",
        ),
        ("atmega2560", {"lfuse": 0xFF}, "fuse preset klipper"),
    ],
)
def test_examples_are_what_the_commands_print(isp, chip, fuses, command):
    sh, _ = isp(chip, json_output=False, fuses=fuses)
    assert sh.printed(command).splitlines() == _example(command)
