"""Drive a terminal program as a person would: tmux send-keys in, capture-pane out."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest


class Terminal:
    def __init__(self, name: str) -> None:
        self.name = name

    @staticmethod
    def available() -> bool:
        return shutil.which("tmux") is not None

    def start(self, command: str, width: int = 160, height: int = 50) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)
        self._tmux(
            "new-session", "-d", "-s", self.name, "-x", str(width), "-y", str(height), command
        )

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", self.name, *keys)

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", self.name, "-S", "-300")

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            shown = self.screen()
            if text in shown:
                return shown
            time.sleep(0.05)
        raise AssertionError(f"{text!r} never appeared; screen:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)

    def _tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def terminal(request):
    if not Terminal.available():
        pytest.skip("tmux is not installed (Debian package tmux)")
    term = Terminal(f"flashsh-{request.node.name}"[:60])
    yield term
    term.close()
