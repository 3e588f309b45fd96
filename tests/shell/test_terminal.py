"""The shell on a real terminal (tmux): progress bar, Ctrl-C mid-transfer, prompt."""

from __future__ import annotations

import random
import sys

import pytest
from tmuxdrive import terminal  # noqa: F401  (fixture)

pytestmark = pytest.mark.debian


def test_progress_bar_and_ctrl_c_on_a_terminal(terminal, tmp_path):  # noqa: F811
    image = tmp_path / "big.bin"
    image.write_bytes(random.Random(9).randbytes(24 * 1024))
    # Real speed: 24 KiB at 115200 baud takes about 3 s to write.
    target = "sim://stk500v1?chip=atmega328p"
    terminal.start(f"cd {tmp_path} && HOME={tmp_path} {sys.executable} -m flashsh '{target}'")
    terminal.wait_for("flashsh ATmega328P@sim>")
    terminal.keys(f"program {image} verify", "Enter")
    shown = terminal.wait_for("kB/s", timeout=10)
    assert "writing" in shown
    terminal.keys("C-c")
    shown = terminal.wait_for("stopped by Ctrl-C while writing; written so far: 0x0000-")
    # The session is still in step with the bootloader: the next command works.
    terminal.keys("dump flash 0 16", "Enter")
    terminal.wait_for("00000000  ")
    assert "Traceback" not in terminal.screen()
