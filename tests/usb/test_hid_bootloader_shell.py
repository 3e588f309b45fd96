"""The HID bootloader through the command line and the shell, as a user meets it: listed
by `usb`, programmed by `flashsh -c`, reading commands refused in one line."""

from __future__ import annotations

import json
import struct

import pytest

import flashsh.protocols.usb_base as usb_base
import flashsh.sims.usb_bus as usb_bus
from flashsh.cli import main
from flashsh.sims.usb_bus import SimUsbBus, make_device
from tests.shelldriver import Driver

START = 0x08000800


def records(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.fixture
def klipper_bin(tmp_path, monkeypatch):
    """klipper.bin in the working directory, linked for 0x08000800."""
    monkeypatch.chdir(tmp_path)
    data = struct.pack("<II", 0x20005000, START + 0x131) + bytes(range(256)) * 20
    (tmp_path / "klipper.bin").write_bytes(data)
    return data


@pytest.fixture
def quick_follow(monkeypatch):
    monkeypatch.setattr(usb_base, "FOLLOW_TIMEOUT", 0.3)


def test_program_and_reset_from_the_command_line(klipper_bin, quick_follow, capsys):
    status = main(["--json", "-c", "program klipper.bin reset", "sim://hid?build=f1&throttle=0"])
    connected, programmed = records(capsys.readouterr().out)
    assert status == 0
    assert connected["ok"] and connected["result"]["bootloader"].startswith("STM32 HID")
    result = programmed["result"]
    assert programmed["ok"] and result["reset"] is True
    assert result["start"] == START and result["bytes"] == len(klipper_bin)


def test_listed_then_programmed_through_the_backend_option(tmp_path, monkeypatch, capsys):
    bus = SimUsbBus()
    device = make_device("sim://hid?build=f4&app=klipper&throttle=0")
    bus.plug(device)
    monkeypatch.setattr(usb_bus, "_DEFAULT", bus)
    monkeypatch.chdir(tmp_path)
    f4_bin = struct.pack("<II", 0x20005000, 0x08004131) + bytes(range(256)) * 20
    (tmp_path / "klipper.bin").write_bytes(f4_bin)
    backend = ["--json", "--usb-backend", "flashsh.sims.usb_bus:backend"]
    assert main([*backend, "-c", "usb"]) == 0
    (listing,) = records(capsys.readouterr().out)
    (found,) = listing["result"]
    assert (found["target"], found["kind"]) == ("usb:1209:beba:1234567890", "hid")
    assert main([*backend, "-c", "program klipper.bin reset; info", "usb"]) == 0
    _, programmed, info = records(capsys.readouterr().out)
    assert programmed["ok"] and device.image(len(f4_bin)) == f4_bin
    # The board came back running Klipper, and the session went with it.
    assert info["result"]["protocol"] == "usb-application"
    bus.wait_idle()


@pytest.fixture
def driver():
    d = Driver()
    yield d
    d.close()


def test_reading_commands_refuse_in_one_line_with_the_reason(driver, klipper_bin):
    driver.ok("connect sim://hid?throttle=0")
    for line in (
        "verify_image klipper.bin",
        "read_bank flash dump.bin",
        "dump flash 0x08000800 16",
        "program klipper.bin verify",
        "program klipper.bin diff",
        "write flash 0x08000800 0x12",
    ):
        error = driver.error(line)
        assert "the HID bootloader has no read command" in error and "\n" not in error, line


def test_wrong_start_and_old_bootloader_in_the_shell(driver, klipper_bin):
    driver.ok("connect sim://hid?throttle=0")
    error = driver.error("program klipper.bin 0x08002000")
    assert "starts at 0x08002000" in error and "0x08000800" in error
    info = driver.ok("info")
    assert info["details"]["application_start"] == "0x08000800"
    driver.ok("disconnect")
    error = driver.error("connect sim://hid?version=0x0201&throttle=0")
    assert "update the bootloader to v3.00 or later" in error and "\n" not in error
