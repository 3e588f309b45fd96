"""Fuse and lock commands end to end: STK500v2 protocol, simulated programmer and chip."""

from __future__ import annotations

import pytest
from shelldriver import Driver

# Until the STK500v2 protocol and simulator land beside this test.
pytest.importorskip("flashsh.protocols.stk500v2")
pytest.importorskip("flashsh.sims.stk500v2")

ISP = "sim://stk500v2?mode=isp&throttle=0"


@pytest.fixture
def connect():
    drivers: list[Driver] = []

    def make(options: str) -> Driver:
        driver = Driver()
        drivers.append(driver)
        driver.ok(f"connect --protocol stk500v2 '{options}'")
        return driver

    yield make
    for driver in drivers:
        driver.shell.detach()


def sim(driver: Driver):
    return driver.shell.require_session().bootloader.link.port.sim


def test_burning_the_uno_fuses_on_a_factory_chip(connect):
    sh = connect(f"{ISP}&chip=atmega328p")
    fuses = sh.ok("fuse read")["fuses"]
    assert fuses["lfuse"]["fields"]["CKSEL"]["name"] == "rc-8mhz"
    assert fuses["hfuse"]["fields"]["BOOTSZ"]["words"] == 2048
    # The chip runs on its RC oscillator: moving it to the crystal needs --force.
    assert "would move CKSEL 0010 -> 1111" in sh.error("fuse preset arduino")
    assert sim(sh).fuses == (0x62, 0xD9, 0xFF)
    result = sh.ok("fuse preset arduino --force")
    assert sim(sh).fuses == (0xFF, 0xDE, 0xFD)
    assert result["written"]["hfuse"]["fields"]["BOOTSZ"]["start"] == 0x7E00
    protect = sh.ok(f"lock write 0x{result['lock_after']:02x}")
    assert protect["written"]["lock"]["read_back"] == 0xCF == sim(sh).lock
    assert "only through a chip erase" in sh.error("lock write unlock")
    assert sh.ok("lock read")["lock"]["fields"]["BLB1"]["name"] == "mode3"


def test_atmega168_extended_fuse_reads_back_with_its_unused_bits_set(connect):
    sh = connect(f"{ISP}&chip=atmega168&fuses=ff:dd:f9")
    result = sh.ok("fuse preset klipper")  # already on the crystal: nothing refused
    assert result["written"]["efuse"]["new"] == 0x04
    assert result["written"]["efuse"]["read_back"] == 0xFC
    assert result["unchanged"] == ["lfuse", "hfuse"]
    boot = sh.ok("fuse read")["fuses"]["efuse"]["fields"]["BOOTSZ"]
    assert (boot["words"], boot["start"]) == (256, 0x3E00)


def test_what_the_clock_rule_prevents(connect):
    # A board without a crystal: the crystal setting stops the chip, and ISP with it.
    sh = connect(f"{ISP}&chip=atmega328p&xtal=0")
    assert "without a crystal of that range" in sh.error("fuse write lfuse 0xff")
    sh.ok("fuse write lfuse 0xff --force")
    sh.ok("disconnect")
    error = Driver().error(
        f"connect --protocol stk500v2 '{ISP}&chip=atmega328p&xtal=0&fuses=ff:d9:ff'"
    )
    assert "did not enter ISP programming mode" in error


def test_mega2560_bootloader_reads_fuses_but_cannot_write_them(connect):
    sh = connect("sim://stk500v2?chip=atmega2560&throttle=0")
    hfuse = sh.ok("fuse read")["fuses"]["hfuse"]
    assert hfuse["value"] == 0xD8
    assert (hfuse["fields"]["BOOTSZ"]["words"], hfuse["fields"]["BOOTSZ"]["start"]) == (
        4096,
        0x3E000,
    )
    assert sh.ok("lock read")["lock"]["fields"]["BLB1"]["name"] == "mode3"
    error = sh.error("fuse set EESAVE=on")
    assert error.startswith("Arduino stk500v2 bootloader")
    assert "cannot write fuses or lock bits" in error


def test_locked_chip_needs_a_chip_erase_before_unlocking(connect):
    sh = connect(f"{ISP}&chip=atmega2560&fuses=ff:d8:fd&lock=0f")
    error = sh.error("lock write unlock")
    assert "only through a chip erase" in error and "`mass_erase`" in error
    assert sh.ok("mass_erase")["method"] == "chip erase"
    assert sh.ok("lock read")["lock"]["value"] == 0xFF
    sh.ok("lock write bootloader-protect")
    assert sim(sh).lock == 0xCF
    assert sim(sh).fuses == (0xFF, 0xD8, 0xFD)  # a chip erase leaves the fuses alone


def test_bootloader_burning_flow_through_the_python_api(connect, tmp_path):
    from flashsh import fuse_ops, operations
    from flashsh.images import load_image, save_image

    sh = connect(f"{ISP}&chip=atmega2560&fuses=ff:99:ff")
    session = sh.shell.require_session()
    plan = fuse_ops.plan_preset(session, "klipper")
    assert [b.name for b, _, _ in plan.changes] == ["efuse", "hfuse"]
    assert "hfuse 0x99 -> 0xd8" in plan.text()
    fuse_ops.apply(session, plan)
    boot = tmp_path / "boot.hex"
    save_image(boot, 0x3E000, b"\x0c\x94" * 64)  # where BOOTSZ 4096 words puts it
    operations.program(session, load_image(boot), verify=True)
    result = fuse_ops.apply(session, fuse_ops.plan_lock(session, plan.lock_after))
    assert result["written"]["lock"]["fields"]["BLB1"]["name"] == "mode3"
    assert (sim(sh).fuses, sim(sh).lock) == ((0xFF, 0xD8, 0xFD), 0xCF)
