"""flashsh against the REAL bootloaders of the big AVRs running in simavr.

* ATmegaBOOT on the ATmega1280 (Arduino Mega), STK500v1 at 57600 baud;
* the stk500v2 "wiring" bootloader on the ATmega2560 (Arduino Mega 2560), 115200 baud.

The flash dump taken when the simulation stops is the judge: it must hold exactly the
image, erased flash up to the boot section, and the untouched bootloader.  The images
cross 64 KiB (and 128 KiB on the 2560) and contain "!!!" runs (the 2560 monitor trigger).
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import time

import pytest
from harness.firmware import flash_image

pytestmark = pytest.mark.debian


def flashsh(port: str, commands: str, *extra: str, timeout: float = 300):
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "flashsh", *extra, "-c", commands, port],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc, time.monotonic() - t0


def results(proc) -> dict[str, dict]:
    """--json output: command name -> result of its (last) run."""
    out = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            obj = json.loads(line)
            assert obj["ok"], obj
            out[obj["command"]] = obj["result"]
    return out


def random_image(seed: str, size: int) -> bytes:
    image = bytearray(random.Random(seed).randbytes(size))
    for at in (0x100, 0xFFFE, 0x1FFFF):
        if at + 3 <= size:
            image[at : at + 3] = b"!!!"
    return bytes(image)


def check_flash(flash: bytes, bl, image: bytes) -> None:
    assert len(flash) == bl.flash_size
    assert flash[: len(image)] == image
    assert flash[len(image) : bl.boot_start] == b"\xff" * (bl.boot_start - len(image))
    expected_boot = flash_image(bl.hex_path, bl.flash_size)[bl.boot_start :]
    assert flash[bl.boot_start :] == expected_boot, "bootloader section changed"


def test_program_and_verify_72k_on_real_atmegaboot1280(avr_sim, tmp_path, record_property):
    image = random_image("flashsh1280", 0x12000 + 100)  # crosses 64 KiB, partial last page
    app = tmp_path / "app.bin"
    app.write_bytes(image)
    back = tmp_path / "back.bin"
    sim = avr_sim("atmegaboot1280")
    proc, elapsed = flashsh(
        sim.pty,
        f"program {app} verify; read_bank flash {back} 0xff00 0x200",
        "--baud",
        "57600",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    res = results(proc)
    assert res["connect"]["bootloader"].startswith("ATmegaBOOT")
    assert res["connect"]["chip"] == "ATmega1280"
    assert res["connect"]["bootloader_range"] == [0x1F000, 0x20000]
    program = res["program"]
    assert (program["pages_written"], program["verified"]) == (289, True)
    assert back.read_bytes() == image[0xFF00:0x10100]  # read across the 64 KiB line
    check_flash(sim.stop(), sim.bootloader, image)
    record_property("flashsh_1280_72k_program_verify_s", round(program["seconds"], 2))
    print(f"flashsh 72 KiB program+verify on ATmegaBOOT 1280: {program['seconds']:.1f} s "
          f"(whole run {elapsed:.1f} s)")  # fmt: skip


def test_auto_detection_on_a_blank_atmegaboot1280(avr_sim):
    # The 115200-baud probes arrive as garbage at 57600; the fifth bad byte makes
    # ATmegaBOOT jump to 0x0000, and on a blank board the erased flash leads back
    # into the bootloader, which then answers the 57600 probe.  (With an
    # application on the board and no DTR line to reset it, as on the pty, the
    # application would run instead.)
    sim = avr_sim("atmegaboot1280", park_app=False)
    proc, elapsed = flashsh(sim.pty, "info", "--json")
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    info = results(proc)["info"]
    assert (info["protocol"], info["chip"], info["baudrate"]) == ("stk500v1", "ATmega1280", 57600)
    assert info["bootloader"].startswith("ATmegaBOOT")
    assert sim.stop() == flash_image(sim.bootloader.hex_path, sim.bootloader.flash_size)
    print(f"flashsh auto-detection on a blank Mega 1280: {elapsed:.1f} s")


@pytest.mark.parametrize("protocol", ["stk500v2", "auto"])
def test_program_and_verify_132k_on_real_mega2560(avr_sim, tmp_path, protocol, record_property):
    image = random_image("flashsh2560", 0x21000 + 77)  # crosses 64 and 128 KiB
    app = tmp_path / "app.bin"
    app.write_bytes(image)
    sim = avr_sim("stk500v2_mega2560")
    extra = ["--protocol", protocol] if protocol != "auto" else []
    proc, elapsed = flashsh(sim.pty, f"info; program {app} verify", *extra, "--json")
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    res = results(proc)
    info = res["info"]
    assert info["protocol"] == "stk500v2"
    assert info["chip"] == "ATmega2560"
    # It signs on as "AVRISP_2" like a real AVRISP; flashsh must see the bootloader.
    assert re.search(r"bootloader|stk500boot|wiring", info["bootloader"], re.I), info
    assert not re.search(r"programmer", info["bootloader"], re.I), info
    assert info["bootloader_range"] == [0x3E000, 0x40000]
    program = res["program"]
    assert program["verified"] is True
    assert program["pages_written"] == 0x211  # every page from 0 up, the last one padded
    check_flash(sim.stop(), sim.bootloader, image)
    record_property(f"flashsh_2560_132k_{protocol}_s", round(program["seconds"], 2))
    print(f"flashsh 132 KiB program+verify on the 2560 ({protocol}): "
          f"{program['seconds']:.1f} s (whole run {elapsed:.1f} s)")  # fmt: skip


def test_image_over_the_2560_bootloader_is_refused_and_nothing_written(avr_sim, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(random.Random(7).randbytes(0x3E000 + 16))
    sim = avr_sim("stk500v2_mega2560")
    proc, _ = flashsh(sim.pty, f"program {big} verify", "--protocol", "stk500v2")
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "bootloader" in errors[0], errors
    assert re.search(r"0x0*3e000\b", errors[0]), errors
    check_flash(sim.stop(), sim.bootloader, b"")  # all erased, bootloader intact
