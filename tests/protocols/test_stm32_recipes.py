"""The STM32 recipes in scripts/, and flashsh's command line on the simulator's pty."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from shelldriver import FAST, Driver

from flashsh.shell import script_lines

REPO = Path(__file__).resolve().parents[2]
FLASH = 0x08000000


def flashsh(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flashsh", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def test_bluepill_recipe_backs_up_then_puts_the_bootloader_on(tmp_path):
    boot = tmp_path / "boot.bin"
    boot.write_bytes(random.Random(1).randbytes(7 * 1024))
    old = tmp_path / "old.bin"
    old.write_bytes(random.Random(2).randbytes(0x10000))
    result = flashsh(
        "--protocol",
        "stm32",
        "-D",
        f"BOOTLOADER={boot}",
        "-s",
        str(REPO / "scripts" / "stm32_bluepill_stm32duino.fsh"),
        f"sim://stm32?chip=stm32f103c8&{FAST}&image={old}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "bluepill-backup.bin").read_bytes() == old.read_bytes()
    assert "verified" in result.stdout and "match the chip" in result.stdout


def test_bluepill_recipe_needs_the_bootloader_named(tmp_path):
    result = flashsh(
        "--protocol",
        "stm32",
        "-s",
        str(REPO / "scripts" / "stm32_bluepill_stm32duino.fsh"),
        f"sim://stm32?chip=stm32f103c8&{FAST}",
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "${BOOTLOADER} is not defined (pass -D BOOTLOADER=VALUE" in result.stderr


@pytest.mark.parametrize("state", ["rdp=1", "wrp=0,1", "rdp=0"])
def test_recovery_recipe_brings_back_a_locked_or_hanging_board(tmp_path, state):
    hanging = tmp_path / "hang.bin"
    hanging.write_bytes(b"\xfe\xe7" * 0x8000)  # "b ." over all of flash
    firmware = tmp_path / "fw.bin"
    firmware.write_bytes(random.Random(3).randbytes(6000))
    shell = Driver(protocol="stm32")
    try:
        url = f"sim://stm32?chip=stm32f103c8&{FAST}&image={hanging}&{state}"
        shell.ok(f"connect '{url}'")
        shell.shell.options.variables = {"FIRMWARE": str(firmware)}
        status = shell.shell.run_lines(script_lines(str(REPO / "scripts" / "stm32_recover.fsh")))
        sim = shell.sim
        assert status == 0, shell.out.getvalue()
        assert sim.memory.rdp_level == 0 and sim.memory.protected_units() == []
        assert sim.flash[:6000] == firmware.read_bytes()
        assert sim.flash[6000:0x10000] == b"\xff" * (0x10000 - 6000)
        assert sim.rom.jumps == [FLASH]
    finally:
        shell.close()


def test_the_command_line_on_the_simulators_pty(tmp_path):
    dump = tmp_path / "flash.bin"
    server = subprocess.Popen(
        [sys.executable, "-m", "flashsh.sims", "stm32", "--chip", "stm32f103c8"]
        + ["--throttle", "0", "--dump", str(dump)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = server.stdout.readline().strip()
        app = tmp_path / "app.bin"
        app.write_bytes(random.Random(4).randbytes(3000))
        # A new user: no --protocol, so the AVR probes go first.
        first = flashsh("--json", "-c", f"info; program {app} verify", port)
        assert first.returncode == 0, first.stderr
        records = [json.loads(line) for line in first.stdout.splitlines()]
        info = records[1]["result"]
        assert info["protocol"] == "stm32" and info["chip"] == "STM32F103x8"
        # A pty cannot carry parity; flashsh says so rather than pretend.
        assert "the port reports 8N1" in info["details"]["serial_format"]
        # The ROM stays synchronised between runs: the second run meets the NACK path.
        second = flashsh("--json", "--protocol", "stm32", "-c", f"verify_image {app}", port)
        assert second.returncode == 0, second.stderr
        connect = json.loads(second.stdout.splitlines()[0])["result"]
        assert "NACK: an earlier connection" in connect["how"]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    assert dump.read_bytes()[:3000] == app.read_bytes()
