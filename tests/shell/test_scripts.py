"""Scripts and -c through the real command line, as users and CI run them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def flashsh(*args: str, cwd: Path | None = None, timeout: float = 120):
    return subprocess.run(
        [sys.executable, "-m", "flashsh", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


@pytest.mark.parametrize(
    ("recipe", "target"),
    [
        ("flash_uno_optiboot.fsh", "sim://stk500v1?chip=atmega328p&throttle=0"),
        ("melzi_backup_then_flash.fsh", "sim://stk500v1?chip=atmega1284p&baud=57600&throttle=0"),
    ],
)
def test_shipped_recipes_run_on_the_simulator(recipe, target, tmp_path):
    result = flashsh("-s", str(REPO / "scripts" / recipe), target, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "verified" in result.stdout
    if recipe.startswith("melzi"):
        backup = tmp_path / "melzi-backup.hex"
        assert backup.stat().st_size > 300_000  # 127 KiB of flash as Intel HEX


def test_failing_line_stops_the_script_with_file_and_line(tmp_path):
    app = tmp_path / "app.bin"
    app.write_bytes(b"\x42" * 256)
    script = tmp_path / "recipe.fsh"
    script.write_text(
        f"# a recipe with a typo\ninfo\nprogram missing.hex verify\nprogram {app} verify\n"
    )
    result = flashsh("--json", "-s", str(script), "sim://stk500v1?chip=atmega328p&throttle=0")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{script}:3: ") and "missing.hex" in last
    commands = [json.loads(line)["command"] for line in result.stdout.splitlines()]
    assert commands == ["connect", "info", "program"]  # line 4 never ran


def test_json_output_is_one_object_per_command():
    result = flashsh("--json", "-c", "info; echo done", "sim://stk500v1?chip=atmega328p&throttle=0")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["command"] for r in records] == ["connect", "info", "echo"]
    assert all(r["ok"] for r in records)
    info = records[1]["result"]
    assert info["chip"] == "ATmega328P" and info["bootloader_range"] == [0x7E00, 0x8000]


def test_dead_board_is_one_clear_line():
    result = flashsh("-c", "info", "sim://stk500v1?chip=atmega328p&throttle=0&fault=dead")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "no bootloader answered" in errors[0] and "press reset" in errors[0]


def test_bad_sim_option_is_reported():
    result = flashsh("-c", "info", "sim://stk500v1?chip=atmega328p&colour=blue")
    assert result.returncode == 1
    assert "unknown option 'colour'" in result.stderr
