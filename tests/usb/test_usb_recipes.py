"""The USB recipes in scripts/ run as written against the simulated bootloaders."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

import flashsh.protocols.usb_base as usb_base
from flashsh.cli import main
from flashsh.images import save_image

SCRIPTS = Path(__file__).parents[2] / "scripts"


def firmware(path: Path, start: int) -> Path:
    body = bytes((i * 29 + 5) & 0xFF for i in range(9000))
    path.write_bytes(struct.pack("<II", 0x20005000, start + 0x101) + body)
    return path


@pytest.mark.parametrize(
    ("script", "target", "start", "defines"),
    [
        ("stm32_dfu_klipper.fsh", "sim://dfuse?chip=stm32f407&throttle=0&app=klipper",
         0x08008000, ["START=0x08008000"]),
        ("stm32_dfu_klipper.fsh", "sim://dfuse?chip=stm32f072&throttle=0&app=klipper",
         0x08000000, []),
        ("bluepill_maple_klipper.fsh", "sim://maple?throttle=0&app=klipper", 0x08002000, []),
        ("hid_bootloader_klipper.fsh", "sim://hid?build=f1&throttle=0&app=klipper",
         0x08000800, []),
        ("hid_bootloader_klipper.fsh", "sim://hid?build=f4&throttle=0&app=klipper",
         0x08004000, []),
    ],
)  # fmt: skip
def test_stm32_recipes(tmp_path, capsys, script, target, start, defines):
    path = firmware(tmp_path / "klipper.bin", start)
    argv = ["-D", f"FIRMWARE={path}"]
    for text in defines:
        argv += ["-D", text]
    status = main([*argv, "-s", str(SCRIPTS / script), target])
    out = capsys.readouterr()
    assert status == 0, out.err
    assert "application started" in out.out
    assert f"at 0x{start:08x}" in out.out


def test_teensy_recipe(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(usb_base, "FOLLOW_TIMEOUT", 0.2)  # a sketch without USB
    save_image(tmp_path / "marlin.hex", 0, bytes(range(256)) * 12)
    target = "sim://halfkay?model=teensy2&throttle=0"
    status = main(["-D", f"FIRMWARE={tmp_path / 'marlin.hex'}", "-s",
                   str(SCRIPTS / "teensy_halfkay.fsh"), target])  # fmt: skip
    out = capsys.readouterr()
    assert status == 0, out.err
    assert "Teensy 2.0" in out.out and "application started" in out.out
