"""Bootloader drives through the command line and the shell, as a user meets them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flashsh.cli import main
from tests.shelldriver import Driver
from tests.usb.msc_helpers import arm_app, drive


def records(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_program_and_reset_from_the_command_line(in_tmp: Path, capsys) -> None:
    app = arm_app(0x2000, 4000)
    (in_tmp / "app.bin").write_bytes(app)
    with drive("zero", in_tmp) as sim:
        status = main(["--json", "-c", "program app.bin reset", f"msc:{sim.path}"])
        connected, programmed = records(capsys.readouterr().out)
        assert status == 0
        assert connected["ok"] and connected["result"]["chip"] == "SAMD21G18A"
        result = programmed["result"]
        assert programmed["ok"] and result["reset"] is True and result["bytes"] == 4000
        assert sim.chip.read(0x2000, 4000) == app


def test_a_uf2_file_for_the_drive_from_the_shell(in_tmp: Path) -> None:
    app = bytes(range(256)) * 8
    (in_tmp / "app.bin").write_bytes(app)
    with drive("pico", in_tmp) as sim:
        shell = Driver()
        try:
            shell.ok(f"connect msc:{sim.path}")
            info = shell.ok("info")
            assert info["protocol"] == "uf2" and info["chip"] == "RP2040"
            error = shell.error("verify_image app.bin")
            assert error == (
                "uf2 cannot read back, so it cannot verify (the RP2040 UF2 drive has no "
                "CURRENT.UF2: nothing on it shows the flash)"
            )
            shell.ok("program app.bin")
            assert sim.chip.read(0x10000000, len(app)) == app
            error = shell.error("program app.bin")
            assert "has gone: the board runs its application" in error
            assert "\n" not in error
        finally:
            shell.close()


def test_the_msc_bootloader_refuses_reading_in_one_line(in_tmp: Path) -> None:
    with drive("bluepill", in_tmp) as sim:
        shell = Driver()
        try:
            shell.ok(f"connect msc:{sim.path}")
            error = shell.error("read_bank flash dump.bin")
            assert error.startswith("msc cannot read flash (the STM32 MSC bootloader keeps no")
            assert "\n" not in error
        finally:
            shell.close()
