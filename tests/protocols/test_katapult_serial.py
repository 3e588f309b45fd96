"""Katapult and Klipper on USB-CDC and UART ports, and a CAN bus behind an slcan adapter
in another process, driven through flashsh's command line as a user would."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys

import pytest
from shelldriver import Driver

FLASH = 0x08000000
APP = 0x08002000


def flashsh(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flashsh", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def image(tmp_path, size=3000, seed=5):
    path = tmp_path / "klipper.bin"
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def app_area(board, size: int) -> bytes:
    return board.flash[APP - FLASH : APP - FLASH + size]


def test_usb_katapult_is_found_by_its_usb_id_and_flashed(tmp_path):
    path = image(tmp_path)
    result = flashsh(
        "--json", "-c", f"info; program {path} verify reset", "sim://katapult?throttle=0"
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    info = next(r["result"] for r in records if r["command"] == "info")
    assert info["protocol"] == "katapult" and info["how"] == "CONNECT answered on USB 1d50:6177"
    # USB-CDC ignores the baud rate, so none is claimed.
    assert info["baudrate"] is None
    program = next(r["result"] for r in records if r["command"] == "program")
    assert program["verified"] and program["reset"]


def test_uart_katapult_in_process_keeps_every_byte(tmp_path):
    path = image(tmp_path, 5000)
    d = Driver(protocol="katapult")
    info = d.ok("connect sim://katapult?link=uart&throttle=0")
    assert info["baudrate"] == 250000
    d.ok(f"program {path} verify")
    board = d.sim
    assert app_area(board, 5000) == path.read_bytes()
    # GET_CANBUS_ID is a CAN-only command; nothing asked it on a port.
    assert board.state == "bootloader"
    d.ok("reset")
    assert board.state == "application"
    d.close()


def test_uart_katapult_at_the_wrong_baud_is_not_found():
    result = flashsh(
        "--protocol", "katapult", "--baud", "115200", "-c", "info",
        "sim://katapult?link=uart&throttle=0",
    )  # fmt: skip
    assert result.returncode == 1
    error = result.stderr.strip()
    assert "\n" not in error and "katapult@115200" in error


@pytest.mark.parametrize("link", ["usb", "uart"])
def test_klipper_board_reboots_into_katapult_and_the_flash_goes_on(tmp_path, link):
    path = image(tmp_path, 4000)
    protocol = ["--protocol", "klipper"] if link == "uart" else []
    result = flashsh(
        *protocol,
        "-c",
        f"bootloader; program {path} verify reset",
        f"sim://klipper?link={link}&throttle=0",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("connected: Klipper firmware is running on sim://klipper")
    assert lines[0].endswith("use `bootloader` to reboot it into Katapult")
    assert lines[1].startswith("now in Katapult v0.0.1 (protocol 1.1.0) on stm32f103xe")
    assert "verified; application started" in lines[2]


def test_klipper_board_in_process_gets_the_image(tmp_path):
    path = image(tmp_path, 4000)
    d = Driver()
    info = d.ok("connect sim://klipper?throttle=0")
    assert info["protocol"] == "klipper" and info["chip"] == "stm32f103xe"
    board = d.sim
    assert board.usb_id == "1d50:614e"
    error = d.error(f"program {path} verify")
    assert "Klipper firmware is running" in error and "use `bootloader`" in error
    assert app_area(board, 16) != path.read_bytes()[:16]
    d.ok("bootloader")
    assert board.usb_id == "1d50:6177" and board.state == "bootloader"
    d.ok(f"program {path} verify reset")
    assert app_area(board, 4000) == path.read_bytes()
    assert board.usb_id == "1d50:614e"
    d.close()


def test_bootloader_on_katapult_already_says_so():
    result = flashsh("-c", "bootloader", "sim://katapult?throttle=0")
    assert result.returncode == 0, result.stderr
    assert "already in the bootloader: Katapult" in result.stdout


def test_silent_katapult_port_is_one_line():
    result = flashsh(
        "--protocol", "katapult", "-c", "bootloader", "sim://katapult?throttle=0&fault=silent"
    )
    assert result.returncode == 1
    error = result.stderr.strip()
    assert "\n" not in error and "no bootloader answered" in error


# ---------------------------------------------------------------------- slcan


@pytest.fixture
def slcan_bus():
    """A CAN bus with one Katapult and one Klipper node, in another process, behind an
    slcan adapter on a pseudo-terminal."""
    server = subprocess.Popen(
        [
            sys.executable, "-m", "flashsh.sims", "can",
            "--node", "katapult:aabbccddeeff",
            "--node", "klipper:112233445566",
            "--throttle", "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    path = server.stdout.readline().strip()
    assert path.startswith("/dev/"), server.stderr.read()
    yield path
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=10)


def test_query_through_an_slcan_adapter_as_a_new_user(slcan_bus):
    result = flashsh(
        "--can-interface", "slcan", "--can-channel", slcan_bus, "-c", "query --timeout 0.5"
    )
    assert result.returncode == 0, result.stderr
    assert "aabbccddeeff  Katapult" in result.stdout
    assert "112233445566  Klipper" in result.stdout


def test_flash_by_uuid_through_an_slcan_adapter(slcan_bus, tmp_path):
    path = image(tmp_path, 2000)
    result = flashsh(
        "--can-interface", "slcan", "--can-channel", slcan_bus,
        "-c", f"bootloader; program {path} verify reset", "112233445566",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "now in Katapult" in result.stdout and "verified; application started" in result.stdout


def test_wrong_bitrate_on_an_slcan_adapter_is_named(tmp_path):
    server = subprocess.Popen(
        [
            sys.executable, "-m", "flashsh.sims", "can",
            "--node", "katapult:aabbccddeeff", "--bitrate", "500000", "--throttle", "0",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        path = server.stdout.readline().strip()
        result = flashsh(
            "--can-interface", "slcan", "--can-channel", path, "-c", "query --timeout 0.3"
        )  # the default 1000000: nobody on the bus hears it
        assert result.returncode == 1
        assert "no CAN node answered" in result.stderr and "bitrate" in result.stderr
        result = flashsh(
            "--can-interface", "slcan", "--can-channel", path, "--bitrate", "500000",
            "-c", "query --timeout 0.3",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)


def test_python_can_configuration_file_names_the_bus(tmp_path):
    # python-can reads ~/.canrc when flashsh is given no CAN options.
    bus = "sim://can?node=katapult:aabbccddeeff&throttle=0"
    (tmp_path / ".canrc").write_text(f"[default]\ninterface = virtual\nchannel = {bus}\n")
    import os

    env = {**os.environ, "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "flashsh", "-c", "query --timeout 0.3"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "aabbccddeeff  Katapult" in result.stdout
