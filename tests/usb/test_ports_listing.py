"""`ports` lists USB bootloaders and mounted bootloader drives after the serial ports."""

from __future__ import annotations

import json

from flashsh.cli import main
from flashsh.transports import msc


def test_ports_lists_usb_bootloaders_and_drives(tmp_path, monkeypatch, capsys):
    mount = tmp_path / "RPI-RP2"
    mount.mkdir()
    (mount / "INFO_UF2.TXT").write_text(
        "UF2 Bootloader v3.0\nModel: Raspberry Pi RP2\nBoard-ID: RPI-RP2\n"
    )
    table = f"/dev/sdz1 {mount} vfat rw 0 0\nproc /proc proc rw 0 0\n".encode()
    monkeypatch.setattr(msc, "read_mounts", lambda: table)
    monkeypatch.setattr("serial.tools.list_ports.comports", lambda: [])
    monkeypatch.setenv("FLASHSH_SIM_USB", "sim://maple?throttle=0")
    monkeypatch.setattr("flashsh.sims.usb_bus._DEFAULT", None)
    status = main(["--usb-backend", "flashsh.sims.usb_bus:backend", "-c", "ports"])
    out = capsys.readouterr().out
    assert status == 0
    assert "usb:1eaf:0003:LLM 003" in out and "STM32duino (Maple)" in out
    assert str(mount) in out and "UF2, Board-ID RPI-RP2" in out

    status = main(["--json", "--usb-backend", "flashsh.sims.usb_bus:backend", "-c", "ports"])
    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    kinds = [next(iter(entry)) for entry in record["result"]]
    assert kinds == ["usb", "drive"]
    assert record["result"][1]["drive"]["target"] == str(mount)


def test_ports_with_nothing_says_where_to_look(monkeypatch, capsys):
    monkeypatch.setattr(msc, "read_mounts", lambda: b"")
    monkeypatch.setattr("serial.tools.list_ports.comports", lambda: [])
    monkeypatch.setenv("FLASHSH_SIM_USB", "")
    monkeypatch.setattr("flashsh.sims.usb_bus._DEFAULT", None)
    assert main(["--usb-backend", "flashsh.sims.usb_bus:backend", "-c", "ports"]) == 0
    assert "no serial ports, USB bootloaders or bootloader drives found" in capsys.readouterr().out
