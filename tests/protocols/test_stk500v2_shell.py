"""The shell commands users type, on both STK500v2 simulators: info, program, fuse, lock."""

from __future__ import annotations

import io
import json
import random

import pytest

from flashsh.images import save_image
from flashsh.protocols import ProbeOptions
from flashsh.shell import FlashShell, ShellOptions

MEGA = "sim://stk500v2?mode=bootloader&chip=atmega2560&throttle=0"
ISP_328P = "sim://stk500v2?mode=isp&chip=atmega328p&throttle=0"


class Shell:
    def __init__(self, url: str) -> None:
        self.out = io.StringIO()
        probe = ProbeOptions(protocol="stk500v2")
        options = ShellOptions(probe=probe, json=True, interactive=False)
        self.app = FlashShell(options, stdout=self.out)
        self.ok(f"connect {url}")

    def run(self, line: str) -> dict:
        start = self.out.tell()
        self.app.run_line(line)
        records = [json.loads(x) for x in self.out.getvalue()[start:].splitlines() if x[:1] == "{"]
        assert records, f"{line!r} printed nothing"
        return records[-1]

    def ok(self, line: str) -> dict:
        record = self.run(line)
        assert record["ok"], f"{line!r}: {record.get('error')}"
        return record["result"]

    @property
    def sim(self):
        return self.app.require_session().bootloader.link.port.sim


@pytest.fixture
def shell():
    shells: list[Shell] = []

    def make(url: str) -> Shell:
        shells.append(Shell(url))
        return shells[-1]

    yield make
    for s in shells:
        s.app.detach()


def test_mega_program_verify_and_reset(shell, tmp_path):
    data = random.Random(21).randbytes(130 * 1024)
    hexfile = tmp_path / "marlin.hex"
    save_image(hexfile, 0, data)
    mega = shell(MEGA)
    info = mega.ok("info")
    assert info["bootloader_range"] == [0x3E000, 0x40000]
    result = mega.ok(f"program {hexfile} verify reset")
    assert result["verified"] and result["reset"]
    assert mega.sim.flash[: len(data)] == data


def test_mega_fuses_are_shown_but_not_written(shell):
    mega = shell(MEGA)
    fuses = mega.ok("fuse read")["fuses"]
    assert (fuses["lfuse"]["value"], fuses["hfuse"]["value"]) == (0xFF, 0xD8)
    error = mega.run("fuse write hfuse 0xd9")
    assert not error["ok"] and "cannot write fuses" in error["error"]
    assert mega.sim.fuses[1] == 0xD8


def test_isp_fuse_write_and_lock(shell):
    isp = shell(ISP_328P)
    assert isp.ok("fuse read")["fuses"]["hfuse"]["value"] == 0xD9
    written = isp.ok("fuse write hfuse 0xde")["written"]["hfuse"]
    assert (written["new"], written["read_back"]) == (0xDE, 0xDE)
    assert isp.sim.fuses[1] == 0xDE
    isp.ok("lock write 0x0f")
    assert isp.ok("lock read")["lock"]["value"] == 0xCF == isp.sim.lock
    isp.ok("mass_erase")
    assert isp.ok("lock read")["lock"]["value"] == 0xFF


def test_isp_program_refuses_a_used_chip_until_mass_erase(shell, tmp_path):
    image = tmp_path / "app.bin"
    image.write_bytes(random.Random(22).randbytes(2048))
    isp = shell(ISP_328P)
    isp.ok(f"program {image} verify")
    other = tmp_path / "other.bin"
    other.write_bytes(random.Random(23).randbytes(2048))
    error = isp.run(f"program {other}")
    assert not error["ok"] and "mass_erase" in error["error"]
    isp.ok("mass_erase")
    isp.ok(f"program {other} verify")
    assert isp.sim.flash[:2048] == other.read_bytes()
