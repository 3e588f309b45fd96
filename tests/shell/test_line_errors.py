"""A flaky line: lost, garbled and refused replies are recovered from; a dead one is
reported with exactly what is on the chip."""

from __future__ import annotations

import random

import pytest
from shelldriver import FAST

IMAGE = random.Random(11).randbytes(4096)


@pytest.fixture
def app(tmp_path):
    path = tmp_path / "app.bin"
    path.write_bytes(IMAGE)
    return path


@pytest.mark.parametrize("fault", ["drop:500", "corrupt:500", "nosync:40", "failed:40"])
def test_transfer_recovers_from_one_bad_reply(shell, app, fault):
    sh = shell(f"sim://stk500v1?chip=atmega328p&{FAST}&fault={fault}")
    result = sh.ok(f"program {app} verify")
    assert result["verified"] is True
    assert sh.sim.flash[: len(IMAGE)] == IMAGE


def test_dead_line_while_writing_names_the_pages_on_the_chip(shell, app):
    # 60 bytes from the board: the connection's replies, then the first few pages' replies.
    sh = shell(f"sim://stk500v1?chip=atmega328p&{FAST}&fault=stop:60")
    error = sh.error(f"program {app} verify")
    assert error.startswith("writing 0x")
    failed_at = int(error.split()[1], 16)
    assert f"written before that: 0x0000-0x{failed_at - 1:04x}" in error
    flash = sh.sim.flash
    assert flash[:failed_at] == IMAGE[:failed_at]


def test_dead_line_while_verifying_says_writing_was_complete(shell, app):
    sh = shell(f"sim://stk500v1?chip=atmega328p&{FAST}&fault=stop:2000")
    error = sh.error(f"program {app} verify")
    assert error.startswith("reading back 0x") and "every page was written" in error
    assert sh.sim.flash[: len(IMAGE)] == IMAGE
