"""Following a USB board across re-enumeration: Klipper on USB is sent into its
bootloader with the 1200-baud touch, flashed, started, and found again each time under
a new bus address."""

from __future__ import annotations

import struct
import subprocess
import sys

import pytest

from flashsh import operations
from flashsh.errors import UnsupportedError
from flashsh.images import load_image
from flashsh.protocols import ProbeOptions
from flashsh.session import Session

TARGET = "sim://klipper-usb?bootloader=dfuse&throttle=0"


@pytest.fixture
def app_bin(tmp_path):
    path = tmp_path / "klipper.bin"
    body = bytes((i * 37 + 11) & 0xFF for i in range(12000))
    path.write_bytes(struct.pack("<II", 0x20020000, 0x08000101) + body)
    return path


@pytest.fixture
def session():
    opened = Session.open(TARGET, ProbeOptions())
    yield opened
    opened.close()


def test_a_running_application_refuses_memory_commands_with_the_way_in(session):
    assert session.info.protocol == "usb-application"
    with pytest.raises(UnsupportedError, match="`bootloader` reboots it"):
        session.memory_map  # noqa: B018


def test_touch_program_start_and_back_again(session, app_bin):
    first_address = session.bootloader.link.info.address
    assert session.request_bootloader()
    assert session.info.protocol == "dfuse"
    dfu_address = session.bootloader.link.info.address
    assert dfu_address != first_address
    image = load_image(str(app_bin), default_address=session.memory_map.app_start)
    operations.program(session, image, verify=True)
    session.start_application()
    # The ROM left DFU for the new image, which came back as Klipper at the same port.
    assert session.info.protocol == "usb-application"
    assert session.bootloader.link.info.port == "1-1"
    assert session.bootloader.link.info.address not in (first_address, dfu_address)
    assert session.request_bootloader()
    assert operations.verify_image(session, image)["match"]


def test_the_command_line_follows_the_board_too(app_bin):
    result = subprocess.run(
        [sys.executable, "-m", "flashsh", "--json", "-c",
         f"bootloader; program {app_bin} verify reset; info", TARGET],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert '"protocol": "dfuse"' in lines[1] or '"bootloader": "STM32 ROM DFU' in lines[1]
    assert '"verified": true' in lines[2] and '"reset": true' in lines[2]
    assert '"protocol": "usb-application"' in lines[3]
