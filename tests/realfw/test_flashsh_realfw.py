"""flashsh against REAL Arduino bootloaders running in simavr.

The flash dump taken when the simulation stops is the judge: it must hold exactly what
flashsh was asked to write, and the bootloader must be untouched.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
from harness.firmware import flash_image

from flashsh.images import save_image

pytestmark = pytest.mark.debian


def flashsh(port: str, commands: str, *extra: str, timeout: float = 120):
    return subprocess.run(
        [sys.executable, "-m", "flashsh", *extra, "-c", commands, port],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def results(proc) -> list[dict]:
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def bootloader_bytes(bl) -> bytes:
    return flash_image(bl.hex_path, bl.flash_size)[bl.boot_start :]


def test_program_and_verify_28k_on_real_optiboot(avr_sim, tmp_path):
    image = random.Random(2).randbytes(28 * 1024)
    hexfile = tmp_path / "app.hex"
    save_image(hexfile, 0, image)
    sim = avr_sim("optiboot328")
    proc = flashsh(sim.pty, f"program {hexfile} verify", "--json")
    assert proc.returncode == 0, proc.stderr
    program = results(proc)[-1]["result"]
    assert program["pages_written"] == 224 and program["verified"] is True
    connect = results(proc)[0]["result"]
    assert connect["bootloader"] == "optiboot 4.4" and connect["chip"] == "ATmega328P"
    flash = sim.stop()
    assert flash[: len(image)] == image
    assert flash[len(image) : sim.bootloader.boot_start] == b"\xff" * (
        sim.bootloader.boot_start - len(image)
    )
    assert flash[sim.bootloader.boot_start :] == bootloader_bytes(sim.bootloader)


def test_diff_writes_only_changed_pages_on_real_optiboot(avr_sim, tmp_path):
    image = bytearray(random.Random(3).randbytes(8 * 1024))
    first = tmp_path / "first.bin"
    first.write_bytes(image)
    image[0x1000] ^= 0x55
    image[0x1F80] ^= 0xAA
    second = tmp_path / "second.bin"
    second.write_bytes(image)
    sim = avr_sim("optiboot328")
    proc = flashsh(sim.pty, f"program {first}; program {second} diff verify", "--json")
    assert proc.returncode == 0, proc.stderr
    diff = results(proc)[-1]["result"]
    assert (diff["pages_written"], diff["pages_unchanged"]) == (2, 62)
    assert sim.stop()[: len(image)] == bytes(image)


def test_read_bank_returns_the_real_bootloader(avr_sim, tmp_path):
    sim = avr_sim("optiboot328")
    out = tmp_path / "boot.bin"
    proc = flashsh(sim.pty, f"read_bank flash {out} 0x7e00 512")
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == bootloader_bytes(sim.bootloader)


def test_image_over_the_bootloader_is_refused_and_nothing_written(avr_sim, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(random.Random(4).randbytes(0x7E00 + 16))
    sim = avr_sim("optiboot328")
    proc = flashsh(sim.pty, f"program {big} verify")
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "bootloader" in errors[0] and "0x7e00" in errors[0]
    flash = sim.stop()
    assert flash[: sim.bootloader.boot_start] == b"\xff" * sim.bootloader.boot_start
    assert flash[sim.bootloader.boot_start :] == bootloader_bytes(sim.bootloader)


def test_atmegaboot_at_57600_with_eeprom(avr_sim, tmp_path):
    image = random.Random(5).randbytes(4096)
    app = tmp_path / "app.bin"
    app.write_bytes(image)
    eeprom = tmp_path / "ee.bin"
    sim = avr_sim("atmegaboot328")
    proc = flashsh(
        sim.pty,
        f"program {app} verify; write eeprom 0x10 0xde 0xad 0xbe 0xef; "
        f"read_bank eeprom {eeprom} 0x10 4",
        "--baud",
        "57600",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    assert results(proc)[0]["result"]["bootloader"].startswith("ATmegaBOOT")
    assert eeprom.read_bytes() == bytes([0xDE, 0xAD, 0xBE, 0xEF])
    flash = sim.stop()
    assert flash[:4096] == image
    assert flash[0x7800:] == bootloader_bytes(sim.bootloader)


def test_ctrl_c_stops_between_pages_and_says_what_was_written(avr_sim, tmp_path):
    import re
    import signal
    import time

    image = random.Random(6).randbytes(28 * 1024)
    app = tmp_path / "app.bin"
    app.write_bytes(image)
    sim = avr_sim("optiboot328")
    proc = subprocess.Popen(
        [sys.executable, "-m", "flashsh", "-c", f"program {app} verify", sim.pty],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(2.5)  # connected and well into the 2.7 s of writing
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 1
    match = re.search(
        r"stopped by Ctrl-C while writing; written so far: 0x0000-(0x[0-9a-f]+)", stderr
    )
    assert match, stderr
    written_end = int(match.group(1), 16) + 1
    assert 0 < written_end < len(image) and written_end % 128 == 0
    flash = sim.stop()
    assert flash[:written_end] == image[:written_end]
    assert flash[written_end : sim.bootloader.boot_start] == b"\xff" * (
        sim.bootloader.boot_start - written_end
    )
