"""The interactive shell driven as a person would, through tmux, on real optiboot.

A person types, pauses to think, uses Tab; the session must survive the pauses
(optiboot gives up after one second of silence) and completion must work.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.debian

SESSION = "flashsh-test"


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True).stdout


def screen() -> str:
    return tmux("capture-pane", "-p", "-t", SESSION, "-S", "-200")


def wait_for(text: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shown = screen()
        if text in shown:
            return shown
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never appeared; screen:\n{screen()}")


@pytest.fixture
def tmux_shell(tmp_path):
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (Debian package tmux)")

    def start(target: str) -> None:
        command = f"cd {tmp_path} && HOME={tmp_path} {sys.executable} -m flashsh {target}"
        tmux("new-session", "-d", "-s", SESSION, "-x", "160", "-y", "50", command)

    yield start
    subprocess.run(["tmux", "kill-session", "-t", SESSION], capture_output=True)


def test_shell_keeps_optiboot_awake_while_the_user_thinks(avr_sim, tmux_shell):
    sim = avr_sim("optiboot328")
    tmux_shell(sim.pty)
    wait_for("flashsh ATmega328P@")
    time.sleep(3.0)  # three times optiboot's watchdog timeout
    tmux("send-keys", "-t", SESSION, "info", "Enter")
    shown = wait_for("bootloader at")
    assert "optiboot 4.4" in shown
    assert "error" not in shown
    # The pause must not have cost a reconnect: the log shows one reset (the open).
    assert "application" not in sim.log.lower(), sim.log


def test_tab_completes_commands_and_program_words(avr_sim, tmux_shell):
    sim = avr_sim("optiboot328")
    tmux_shell(sim.pty)
    wait_for("flashsh ATmega328P@")
    # The space that completion adds shows once the next character is typed.
    tmux("send-keys", "-t", SESSION, "verify_im", "Tab")
    time.sleep(0.5)
    tmux("send-keys", "-t", SESSION, "X")
    wait_for("verify_image X")
    tmux("send-keys", "-t", SESSION, "C-u")
    tmux("send-keys", "-t", SESSION, "program x.hex ver", "Tab")
    time.sleep(0.5)
    tmux("send-keys", "-t", SESSION, "Y")
    wait_for("program x.hex verify Y")
    tmux("send-keys", "-t", SESSION, "C-u", "quit", "Enter")
