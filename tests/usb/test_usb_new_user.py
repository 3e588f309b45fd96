"""What a new user does, in one run of flashsh on one (simulated) USB bus with every
kind of USB bootloader plugged in through --usb-backend: list them, connect to each,
program, verify where the bootloader can, reset, and follow the board back."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

from flashsh.images import save_image

DEVICES = [
    "sim://dfuse?chip=stm32f407&throttle=0&app=klipper",
    "sim://maple?throttle=0&app=klipper",
    "sim://hid?build=f1&throttle=0&app=klipper",
    "sim://halfkay?model=teensy2&throttle=0",
    "sim://dfu?throttle=0&tolerant=1",
]


def stm32_bin(path: Path, start: int, size: int = 6000) -> str:
    body = bytes((i * 53 + 7) & 0xFF for i in range(size))
    path.write_bytes(struct.pack("<II", 0x20005000, start + 0x101) + body)
    return str(path)


def run(commands: str, tmp_path: Path) -> list[dict]:
    env = {
        **os.environ,
        "FLASHSH_SIM_USB": " ".join(DEVICES),
        "PYTHONPATH": str(Path(__file__).parents[2]),
    }
    result = subprocess.run(
        [sys.executable, "-m", "flashsh", "--json", "--usb-backend",
         "flashsh.sims.usb_bus:backend", "-c", commands],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_every_usb_bootloader_on_one_bus(tmp_path):
    dfuse = stm32_bin(tmp_path / "f407.bin", 0x08000000)
    maple = stm32_bin(tmp_path / "maple.bin", 0x08002000)
    hid = stm32_bin(tmp_path / "hid.bin", 0x08000800)
    save_image(tmp_path / "teensy.hex", 0, bytes(range(256)) * 8)
    (tmp_path / "lpc.bin").write_bytes(bytes(range(256)) * 9)
    records = run(
        "usb; "
        f"connect usb:0483:df11; program {dfuse} verify reset; bootloader; "
        f"verify_image {dfuse}; "
        f"connect usb:1eaf:0003; program {maple} verify reset; "
        f"connect usb:1209:beba; program {hid} reset; "
        "connect usb:16c0:0478; program teensy.hex; "
        "connect usb:1d50:6015; program lpc.bin verify",
        tmp_path,
    )
    assert all(r["ok"] for r in records)
    listed = {d["id"] for d in records[0]["result"]}
    assert listed == {"0483:df11", "1eaf:0003", "1209:beba", "16c0:0478", "1d50:6015"}
    by_command = [r["command"] for r in records]
    assert by_command.count("connect") == 5 and by_command.count("program") == 5
    programs = [r["result"] for r in records if r["command"] == "program"]
    assert [p["verified"] for p in programs] == [True, True, False, False, True]
    assert programs[0]["reset"] and programs[1]["reset"] and programs[2]["reset"]
    back = next(r for r in records if r["command"] == "bootloader")["result"]
    assert "DfuSe" in back["bootloader"]
    assert next(r for r in records if r["command"] == "verify_image")["result"]["match"]


def test_verify_is_refused_with_the_reason_where_it_cannot_be(tmp_path):
    save_image(tmp_path / "teensy.hex", 0, bytes(range(256)) * 2)
    env = {**os.environ, "FLASHSH_SIM_USB": DEVICES[3]}
    result = subprocess.run(
        [sys.executable, "-m", "flashsh", "--usb-backend", "flashsh.sims.usb_bus:backend",
         "-c", "program teensy.hex verify", "usb"],
        capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode != 0
    (line,) = [x for x in result.stderr.splitlines() if "error" in x]
    assert "HalfKay" in line and "read" in line
