"""SAM-BA end to end against the simulated boards, as a new user would use flashsh, and
bossac (Debian bossa-cli) agreeing with what flashsh wrote."""

from __future__ import annotations

import random
import shutil
import signal
import struct
import subprocess
import sys

import pytest
from shelldriver import Driver

REPO_SCRIPTS = __import__("pathlib").Path(__file__).resolve().parents[2] / "scripts"

#: chip, flash base, application start, initial stack pointer inside its SRAM
CHIPS = {
    "atsamd21g18a": (0x0, 0x2000, 0x20008000),
    "atsamd51j19a": (0x0, 0x4000, 0x20030000),
    "at91sam3x8e": (0x80000, 0x80000, 0x20010000),
    "atsam4e8e": (0x400000, 0x400000, 0x20020000),
}


def flashsh(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flashsh", *args], capture_output=True, text=True, timeout=timeout
    )


def firmware(tmp_path, start: int, sp: int, size: int = 12000, name: str = "klipper.bin"):
    """An image linked for ``start``: its vector table points into itself."""
    body = struct.pack("<II", sp, start + 0x101) + random.Random(start).randbytes(size - 8)
    path = tmp_path / name
    path.write_bytes(body)
    return path


def at(board, base: int, address: int, size: int) -> bytes:
    return board.flash[address - base : address - base + size]


@pytest.mark.parametrize("chip", list(CHIPS))
def test_program_verify_reset_lands_at_the_application_start_and_boots(tmp_path, chip):
    base, start, sp = CHIPS[chip]
    path = firmware(tmp_path, start, sp)
    d = Driver()
    info = d.ok(f"connect sim://samba?chip={chip}&throttle=0")
    assert info["protocol"] == "samba" and info["chip"].lower() == chip
    board = d.sim
    before = board.monitor_code if chip.startswith("atsamd") else b""
    result = d.ok(f"program {path} verify reset")
    assert result["start"] == start and result["verified"]
    assert at(board, base, start, 12000) == path.read_bytes()
    assert board.wait_for_state("application", 3.0)
    assert board.booted and board.booted[-1][0] == sp
    if chip.startswith("atsamd"):
        assert board.monitor_code == before  # the bootloader is untouched
    else:
        assert board.gpnvm & 0b10  # boot from flash set
    d.close()


@pytest.mark.parametrize("chip", ["at91sam3x8e", "atsamd21g18a"])
def test_uart_monitor_with_xmodem(tmp_path, chip):
    base, start, sp = CHIPS[chip]
    path = firmware(tmp_path, start, sp, 3000)
    d = Driver(protocol="samba")
    info = d.ok(f"connect sim://samba?chip={chip}&link=uart&throttle=0")
    assert "UART" in info["details"]["transfer"]
    d.ok(f"program {path} verify")
    assert at(d.sim, base, start, 3000) == path.read_bytes()
    d.close()


def test_writing_into_the_samd_bootloader_is_refused_in_one_line(tmp_path):
    from intelhex import IntelHex

    hex_file = tmp_path / "whole.hex"
    ih = IntelHex()
    ih.frombytes(b"\x00" * 64, offset=0)
    ih.write_hex_file(str(hex_file))
    d = Driver()
    d.ok("connect sim://samba?chip=atsamd21g18a&throttle=0")
    before = d.sim.monitor_code
    error = d.error(f"program {hex_file}")
    assert "\n" not in error and "bootloader" in error and "0x2000" in error
    error = d.error(f"program {firmware(tmp_path, 0x2000, 0x20008000)} 0x1000")
    assert "\n" not in error and "bootloader" in error
    assert d.sim.monitor_code == before
    d.close()


def test_image_linked_for_another_offset_is_refused_unless_forced(tmp_path):
    # Built for a 16 KiB bootloader (0x4000), placed above an 8 KiB one.
    path = firmware(tmp_path, 0x4000, 0x20008000, 4000)
    d = Driver()
    d.ok("connect sim://samba?chip=atsamd21g18a&throttle=0")
    error = d.error(f"program {path} verify")
    assert "not linked for 0x2000" in error and "force" in error
    assert at(d.sim, 0, 0x2000, 64) == b"\xff" * 64
    d.ok(f"program {path} verify force")
    assert at(d.sim, 0, 0x2000, 4000) == path.read_bytes()
    d.close()


def test_gpnvm_read_and_set_on_a_due(tmp_path):
    d = Driver()
    d.ok("connect sim://samba?chip=at91sam3x8e&throttle=0")
    d.ok("gpnvm set 1")
    assert d.sim.gpnvm & 0b10
    d.ok("gpnvm clear 1")
    assert not d.sim.gpnvm & 0b10
    assert "security" in d.error("gpnvm set 0")
    d.close()


@pytest.mark.parametrize(
    "script, chip",
    [
        ("due_klipper.fsh", "at91sam3x8e"),
        ("duet2_klipper.fsh", "atsam4e8e"),
        ("samd21_klipper.fsh", "atsamd21g18a"),
    ],
)
def test_recipes(tmp_path, script, chip):
    base, start, sp = CHIPS[chip]
    path = firmware(tmp_path, start, sp)
    result = flashsh(
        "-D", f"FIRMWARE={path}", "-s", str(REPO_SCRIPTS / script),
        f"sim://samba?chip={chip}&throttle=0",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "verified" in result.stdout


# ---------------------------------------------------------------------- bossac


@pytest.fixture
def samba_pty(request):
    chip, extra = request.param
    server = subprocess.Popen(
        [sys.executable, "-m", "flashsh.sims", "samba", "--chip", chip, "--throttle", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    path = server.stdout.readline().strip()
    assert path.startswith("/dev/"), server.stderr.read()
    yield chip, path
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=10)


@pytest.mark.debian
@pytest.mark.skipif(shutil.which("bossac") is None, reason="needs bossac (Debian bossa-cli)")
@pytest.mark.parametrize("samba_pty", [("atsamd21g18a", []), ("at91sam3x8e", [])], indirect=True)
def test_bossac_agrees_with_what_flashsh_wrote(tmp_path, samba_pty):
    chip, pty = samba_pty
    base, start, sp = CHIPS[chip]
    path = firmware(tmp_path, start, sp, 20000)
    result = flashsh("--protocol", "samba", "-c", f"program {path} verify", pty)
    assert result.returncode == 0, result.stderr
    offset = [f"--offset={start - base:#x}"] if start != base else []
    check = subprocess.run(
        ["bossac", "-p", pty, "-U", "-v", *offset, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "Verify successful" in check.stdout
    # And a flipped byte is noticed: bossac compares for real.
    wrong = bytearray(path.read_bytes())
    wrong[5000] ^= 0x01
    (tmp_path / "wrong.bin").write_bytes(bytes(wrong))
    check = subprocess.run(
        ["bossac", "-p", pty, "-U", "-v", *offset, str(tmp_path / "wrong.bin")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode != 0


@pytest.mark.parametrize("samba_pty", [("atsamd21g18a", [])], indirect=True)
def test_a_new_user_on_the_port_gets_chip_and_bootloader_found(samba_pty):
    # A pty has no USB id: the whole probe chain runs, SAM-BA's N# and V# after the AVR
    # and STM32 probes, and the monitor must still answer them.
    chip, pty = samba_pty
    result = flashsh("-c", "info", pty)
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith("connected: ATSAMD21G18A, Arduino bootloader v2.0 (8 KiB)")
    assert "application start  0x2000" in result.stdout


def test_mass_erase_and_read_bank_spare_the_samd_bootloader(tmp_path):
    path = firmware(tmp_path, 0x2000, 0x20008000, 3000)
    d = Driver()
    d.ok("connect sim://samba?chip=atsamd21g18a&throttle=0")
    before = d.sim.monitor_code
    d.ok(f"program {path} verify")
    out = tmp_path / "back.bin"
    d.ok(f"read_bank 0 {out} 0x2000 3000")
    assert out.read_bytes() == path.read_bytes()
    d.ok("mass_erase")
    assert at(d.sim, 0, 0x2000, 3000) == b"\xff" * 3000
    assert d.sim.monitor_code == before
    d.close()
