"""The interactive shell driven as a person would, through tmux, on real optiboot.

A person types, pauses to think, uses Tab; the session must survive the pauses
(optiboot gives up after one second of silence) and completion must work.
"""

from __future__ import annotations

import sys
import time

import pytest
from tmuxdrive import terminal  # noqa: F401  (fixture)

pytestmark = pytest.mark.debian


def open_shell(term, port: str, home) -> None:
    term.start(f"cd {home} && HOME={home} {sys.executable} -m flashsh {port}")
    term.wait_for("flashsh ATmega328P@")


def test_shell_keeps_optiboot_awake_while_the_user_thinks(avr_sim, terminal, tmp_path):  # noqa: F811
    sim = avr_sim("optiboot328")
    open_shell(terminal, sim.pty, tmp_path)
    time.sleep(3.0)  # three times optiboot's watchdog timeout
    terminal.keys("info", "Enter")
    shown = terminal.wait_for("bootloader at")
    assert "optiboot 4.4" in shown
    assert "error" not in shown
    # No watchdog reset happened: the bootloader never gave up on the idle session.
    assert "application" not in sim.log.lower(), sim.log


def test_tab_completes_commands_and_program_words(avr_sim, terminal, tmp_path):  # noqa: F811
    sim = avr_sim("optiboot328")
    open_shell(terminal, sim.pty, tmp_path)
    # The space that completion adds shows once the next character is typed.
    terminal.keys("verify_im", "Tab")
    time.sleep(0.5)
    terminal.keys("X")
    terminal.wait_for("verify_image X")
    terminal.keys("C-u", "program x.hex ver", "Tab")
    time.sleep(0.5)
    terminal.keys("Y")
    terminal.wait_for("program x.hex verify Y")
    terminal.keys("C-u", "quit", "Enter")
