"""A plain DFU device as a user meets it: the shell with the simulated bus behind
--usb-backend, sim://dfu targets, and the command line; wrong files are one-line errors."""

from __future__ import annotations

import json
import random

import pytest

from flashsh.images.dfu_file import Element, Target, encode_dfu, encode_dfuse
from flashsh.sims import usb_bus
from flashsh.sims.usb_bus import SimUsbBus, make_device
from tests.clirun import run_flashsh as flashsh
from tests.shelldriver import Driver

BACKEND = "flashsh.sims.usb_bus:backend"
BASE = 0x4000  # the Smoothieboard bootloader's block 0


@pytest.fixture
def board(monkeypatch):
    """Plug simulated devices into the bus ``--usb-backend`` serves in this process."""
    bus = SimUsbBus()
    monkeypatch.setattr(usb_bus, "_DEFAULT", bus)

    def plug(url: str):
        sim = make_device(url)
        bus.plug(sim)
        return sim

    return plug


@pytest.fixture
def shell():
    drivers: list[Driver] = []

    def make(**options) -> Driver:
        driver = Driver(usb_backend=BACKEND, **options)
        drivers.append(driver)
        return driver

    yield make
    for driver in drivers:
        driver.close()


@pytest.fixture
def app(tmp_path):
    path = tmp_path / "firmware.bin"
    path.write_bytes(random.Random(5).randbytes(6000))
    return path


def test_list_connect_program_verify_reset_and_back(board, shell, app, tmp_path):
    sim = board("sim://dfu?throttle=0&runtime=1")
    sh = shell()
    (listed,) = sh.ok("usb")
    assert (listed["target"], listed["kind"]) == ("usb:1d50:6015:SIMDFU1", "dfu")
    info = sh.ok("connect usb")
    assert info["protocol"] == "dfu" and info["how"] == "detached from run-time mode (1d50:6015)"
    assert info["chip"] == "LPC1769"
    result = sh.ok(f"program {app} verify")
    assert result["verified"] and result["start"] == BASE
    assert sim.memory[:6000] == app.read_bytes()
    assert "not manifestation tolerant" in result["notes"][0]
    out = tmp_path / "back.bin"
    assert sh.ok(f"read_bank flash {out} 0 6000")["bytes"] == 6000
    assert out.read_bytes() == app.read_bytes()
    assert sh.ok("reset")["application_started"]
    assert sim.mode == "app"
    assert sh.ok(f"verify_image {app}")["match"]  # detached into DFU mode again
    assert sim.mode == "dfu" and sim.boots == 2


def test_info_says_what_dfu_does_not(board, shell):
    board("sim://dfu?throttle=0&usb_id=1209:0001&tolerant=1&transfer=1024")
    sh = shell()
    assert sh.ok("connect usb")["chip"] == "unknown chip"
    details = sh.ok("info")["details"]
    assert details["block_0_at"] == "0x0000 (not reported by DFU)"
    assert details["memory_size"] == "not reported by DFU (give --chip BASE+SIZE)"
    assert details["manifestation"] == "tolerant (stays in DFU mode)"
    assert details["transfer_size"] == 1024


def test_a_sim_target_with_a_chip_given_base(shell, app):
    sh = shell(chip="0x08002000+64K")
    sh.ok("connect sim://dfu?throttle=0&tolerant=1&usb_id=1209:0001")
    result = sh.ok(f"program {app} verify")
    assert result["start"] == 0x08002000
    assert sh.ok("info")["regions"][0]["size"] == 64 * 1024


def test_wrong_files_are_one_line_errors(board, shell, app, tmp_path):
    sim = board("sim://dfu?throttle=0&tolerant=1")
    sh = shell()
    sh.ok("connect usb")
    stm32 = tmp_path / "stm32.dfu"
    stm32.write_bytes(encode_dfuse([Target(0, (Element(0x08000000, b"abcd"),))]))
    damaged = tmp_path / "damaged.dfu"
    good = encode_dfu(app.read_bytes(), vendor=0x1D50, product=0x6015)
    damaged.write_bytes(good[:100] + bytes([good[100] ^ 0x40]) + good[101:])
    hex_file = tmp_path / "built_for_stm32.hex"
    hex_file.write_text(":020000040800F2\n:0400000001020304F2\n:00000001FF\n")
    other = tmp_path / "other.dfu"
    other.write_bytes(encode_dfu(b"fw", vendor=0x0483, product=0xDF11))
    expected = {
        stm32: "is a DfuSe file (ST's format, addresses per alternate setting)",
        damaged: "DFU suffix CRC mismatch",
        hex_file: "starts at 0x08000000, but a DFU device writes from its first block",
        other: "is for USB device 0483:df11 (its DFU suffix says so), not 1d50:6015",
        tmp_path / "missing.dfu": "no such file",
    }
    for path, words in expected.items():
        error = sh.error(f"program {path}")
        assert words in error and "\n" not in error, error
    assert sim.downloads == 0 and not [r for r in sim.log if r[0] == "DNLOAD"]
    fine = tmp_path / "fine.dfu"
    fine.write_bytes(good)
    assert sh.ok(f"program {fine} verify")["verified"]
    assert sim.memory[:6000] == app.read_bytes()


def test_refusals_for_what_plain_dfu_cannot_do(board, shell, app):
    board("sim://dfu?throttle=0&upload=0&usb_id=1209:0001")
    sh = shell()
    sh.ok("connect usb")
    assert sh.error(f"program {app} verify").endswith(
        "(its DFU descriptor says it cannot upload (bitCanUpload is 0): it only takes downloads)"
    )
    assert "cannot read flash" in sh.error("read_bank flash out.bin 0 16")
    error = sh.error("mass_erase")
    assert error.startswith("plain DFU has no erase or patch") and "\n" not in error
    assert sh.ok(f"program {app}")["pages_written"] == 12


def test_command_line_program_verify_reset(app):
    run = flashsh("-c", f"program {app} verify reset", "sim://dfu?throttle=0&tolerant=1")
    assert run.returncode == 0, run.stderr
    assert "verified; application started" in run.stdout


def test_command_line_through_the_backend_option(app):
    run = flashsh(
        "--usb-backend", BACKEND, "--json", "-c", f"usb; program {app} verify; info", "usb",
        env={"FLASHSH_SIM_USB": "sim://dfu?throttle=0&runtime=1"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert all(r["ok"] for r in records)
    assert records[2]["command"] == "program" and records[2]["result"]["verified"]
    assert records[-1]["result"]["protocol"] == "dfu"


def test_command_line_wrong_format_fails_in_one_line(tmp_path):
    damaged = tmp_path / "cut.dfu"
    damaged.write_bytes(b"\x01\x02\x03")
    run = flashsh("-c", f"program {damaged}", "sim://dfu?throttle=0")
    assert run.returncode != 0
    (line,) = run.stderr.strip().splitlines()
    assert "too short for a DFU file: 3 bytes" in line
