"""HalfKay through the command line and the shell: a Teensy++ 2.0 programmed and
rebooted by `flashsh -c`, reading commands refused in one line, --chip when the board
does not say what it is."""

from __future__ import annotations

import json
import os

import pytest

import flashsh.protocols.usb_base as usb_base
from flashsh.cli import main
from flashsh.images import save_image
from tests.shelldriver import Driver


def records(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.fixture
def blink_hex(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(usb_base, "FOLLOW_TIMEOUT", 0.2)  # a sketch without USB
    data = os.urandom(1500)
    save_image(tmp_path / "blink.hex", 0, data)
    return data


def test_program_and_reset_from_the_command_line(blink_hex, capsys):
    status = main(
        ["--json", "-c", "program blink.hex reset", "sim://halfkay?model=teensypp2&throttle=0"]
    )
    connected, programmed = records(capsys.readouterr().out)
    assert status == 0
    assert connected["result"]["chip"] == "Teensy++ 2.0 (AT90USB1286)"
    assert programmed["ok"] and programmed["result"]["reset"] is True
    assert programmed["result"]["bytes"] == len(blink_hex)


def test_usage_0_with_chip_from_the_command_line(blink_hex, capsys):
    url = "sim://halfkay?model=teensy2&usage=0&throttle=0"
    assert main(["--json", "-c", "info", url]) != 0
    (refused,) = records(capsys.readouterr().out)
    assert "does not say which Teensy it is" in refused["error"]
    assert main(["--json", "--chip", "atmega32u4", "-c", "program blink.hex", url]) == 0
    _, programmed = records(capsys.readouterr().out)
    assert programmed["ok"]


@pytest.fixture
def driver():
    d = Driver()
    yield d
    d.close()


def test_reading_commands_refuse_in_one_line_with_halfkays_reason(driver, blink_hex):
    driver.ok("connect sim://halfkay?throttle=0")
    for line in (
        "verify_image blink.hex",
        "read_bank flash dump.bin",
        "dump flash 0 16",
        "program blink.hex verify",
        "program blink.hex diff",
    ):
        error = driver.error(line)
        assert "HalfKay has no read command: it can only write and reboot" in error, line
        assert "\n" not in error
    assert "eeprom" in driver.error("read_bank eeprom e.bin")


def test_info_names_the_board_and_its_usage(driver):
    info = driver.ok("connect sim://halfkay?model=teensy2&throttle=0")
    assert info["chip"] == "Teensy 2.0 (ATmega32U4)"
    assert "HID usage 0x1B" in info["how"]
