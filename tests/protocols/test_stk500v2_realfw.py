"""flashsh's STK500v2 code against the REAL Mega 2560 bootloader running in simavr.

Checks what the fact sheet could only derive from the source: CMD_CHIP_ERASE_ISP answers
FAILED and only moves the erase pointer back to 0, writes out of order keep every other
page, EEPROM reads come back right although the bootloader reads from twice the loaded
address. The flash dump taken when the simulation stops is the judge.
"""

from __future__ import annotations

import random

import pytest

from flashsh import operations
from flashsh.images import Image
from flashsh.protocols import ProbeOptions
from flashsh.session import Session

pytestmark = pytest.mark.debian

PAGE = 256


@pytest.fixture
def real_mega(tmp_path):
    try:
        from harness.avrsim import AvrSim
        from harness.build import HarnessUnavailable, build_avr_pty
        from harness.firmware import get_bootloader
    except ImportError as exc:  # pragma: no cover - the harness lives in tests/harness
        pytest.skip(f"simulator harness missing: {exc}")
    try:
        sim = AvrSim(get_bootloader("stk500v2_mega2560"), tmp_path / "sim", binary=build_avr_pty())
    except HarnessUnavailable as exc:
        pytest.skip(f"simulator harness unavailable: {exc}")
    sim.start()
    yield sim
    sim.__exit__(None, None, None)


def test_out_of_order_writes_and_eeprom_on_the_real_bootloader(real_mega):
    session = Session.open(real_mega.pty, ProbeOptions(protocol="stk500v2"))
    try:
        assert session.bootloader.mode == "bootloader"
        flash = session.memory_map.region("flash")
        eeprom = session.memory_map.region("eeprom")
        image = bytearray(random.Random(11).randbytes(12 * PAGE))
        image[0x300:0x303] = b"!!!"
        operations.program(session, Image([(0, bytes(image))]))
        # Backwards: the pointer must be sent back to 0 and the pages below rewritten.
        operations.write_bytes(session, flash, 4 * PAGE + 9, b"\x5a\xa5")
        image[4 * PAGE + 9 : 4 * PAGE + 11] = b"\x5a\xa5"
        ee_data = random.Random(12).randbytes(2 * eeprom.page_size)
        operations.write_bytes(session, eeprom, 0x80, ee_data)
        assert operations.read_memory(session, eeprom, 0x80, len(ee_data)) == ee_data
        assert operations.read_memory(session, eeprom, 0, 0x80) == b"\xff" * 0x80
        assert operations.read_memory(session, flash, 0, len(image)) == bytes(image)
    finally:
        session.close()
    dump = real_mega.stop()
    assert dump[: len(image)] == bytes(image)
    assert dump[len(image) : 0x3E000] == b"\xff" * (0x3E000 - len(image))
