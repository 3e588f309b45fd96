"""flashsh's STK500v2 protocol against the simulated Mega 2560 stk500v2 bootloader.

The simulator models stk500boot.c: the page erase pointer, the "!!!" monitor (everywhere
in the stream on ``build=old``), the doubled EEPROM read address, the compiled-in
signature. The simulated chip's memory is the judge of every write.
"""

from __future__ import annotations

import random

import pytest

from flashsh import operations
from flashsh.errors import TargetError, UnsupportedError
from flashsh.images import Image
from flashsh.protocols import ProbeOptions
from flashsh.protocols.base import Capability
from flashsh.protocols.stk500v2_wiring import monitor_safe_chunks, monitor_safe_passes
from flashsh.session import Session

BOOT = 0x3E000
UNERASED = 0x3C000
PAGE = 256


@pytest.fixture
def mega():
    sessions: list[Session] = []

    def connect(options: str = "", protocol: str = "stk500v2") -> Session:
        url = f"sim://stk500v2?mode=bootloader&chip=atmega2560&throttle=0{options}"
        session = Session.open(url, ProbeOptions(protocol=protocol))
        sessions.append(session)
        return session

    yield connect
    for session in sessions:
        session.close()


def sim_of(session: Session):
    return session.bootloader.link.port.sim


def flash_region(session: Session):
    return session.memory_map.region("flash")


def test_bootloader_is_found_by_auto_detection_and_told_apart_from_a_programmer(mega):
    session = mega(protocol="auto")
    info = session.info
    assert info.protocol == "stk500v2" and info.chip == "ATmega2560"
    assert info.bootloader.startswith("Arduino stk500v2 bootloader")
    assert info.details["sign_on"] == "AVRISP_2"
    assert "0x0f" in info.details["told_apart_by"]
    assert "compiled into the bootloader" in info.details["signature"]
    caps = session.capabilities
    assert Capability.CHIP_ERASE not in caps and Capability.SIGNATURE_FROM_SILICON not in caps
    assert Capability.EEPROM in caps and Capability.KEEP_ALIVE in caps
    assert session.memory_map.bootloader == (BOOT, 0x40000)


def test_program_and_verify_200k_past_the_64k_word_line(mega):
    session = mega()
    data = random.Random(1).randbytes(200 * 1024)
    result = operations.program(session, Image([(0, data)], source="big"), verify=True)
    assert result["pages_written"] == 800 and result["verified"]
    flash = sim_of(session).flash
    assert flash[: len(data)] == data  # above 128 KiB too: bit 31 / RAMPZ handled
    assert flash[BOOT:].startswith(b"stk500boot_v2 ")


def test_exclamation_marks_never_reach_an_old_bootloader(mega):
    session = mega("&build=old")
    data = bytearray(random.Random(2).randbytes(8 * PAGE))
    data[0x10:0x18] = b"!" * 8  # a long run
    data[PAGE - 2 : PAGE + 1] = b"!!!"  # across a page boundary
    data[3 * PAGE + 100 : 3 * PAGE + 103] = b"!!!"
    data[-2:] = b"!!"  # at the very end: the checksum must not make a third
    operations.program(session, Image([(0, bytes(data))]), verify=True)
    sim = sim_of(session)
    assert sim.firmware.monitor_runs == 0
    assert sim.flash[: len(data)] == bytes(data)


@pytest.mark.parametrize("build", ["current", "old"])
def test_a_page_written_out_of_order_keeps_every_other_page(mega, build):
    session = mega(f"&build={build}")
    flash = flash_region(session)
    data = bytearray(random.Random(3).randbytes(64 * PAGE))
    # Pages the catch-up rewrites in two passes, each erasing its next page early.
    data[3 * PAGE + 5 : 3 * PAGE + 9] = b"!!!!"
    data[8 * PAGE - 2 : 8 * PAGE] = b"!!"
    data[60 * PAGE : 60 * PAGE + 3] = b"!!!"
    operations.program(session, Image([(0, bytes(data))]))
    before = sim_of(session).flash
    # Backwards: the bootloader only erases in order from 0, flashsh must rewrite up to it.
    operations.write_bytes(session, flash, 5 * PAGE + 7, b"\x01\x02\x03")
    # Forwards past the end of what was written, across a gap.
    operations.write_bytes(session, flash, 80 * PAGE, b"\xaa")
    expected = bytearray(before)
    expected[5 * PAGE + 7 : 5 * PAGE + 10] = b"\x01\x02\x03"
    expected[80 * PAGE] = 0xAA
    assert operations.read_memory(session, flash, 0, 96 * PAGE) == bytes(expected[: 96 * PAGE])
    session.close()  # writes back what the pointer erased early
    assert sim_of(session).flash == bytes(expected)
    assert sim_of(session).firmware.monitor_runs == 0


def test_a_page_erased_ahead_by_a_patch_gets_its_contents_back(mega):
    session = mega("&build=old")
    flash = flash_region(session)
    data = random.Random(4).randbytes(32 * PAGE)
    operations.program(session, Image([(0, data)]))
    # A "!!!" page needs two writes; the second erases the next page early.
    operations.write_bytes(session, flash, 10 * PAGE, b"!!!!")
    expected = bytearray(data)
    expected[10 * PAGE : 10 * PAGE + 4] = b"!!!!"
    # Read back through flashsh before and after it is written back: the same.
    assert operations.read_memory(session, flash, 0, len(data)) == bytes(expected)
    session.start_application()
    sim = sim_of(session)
    assert sim.flash[: len(data)] == bytes(expected)
    assert sim.firmware.monitor_runs == 0


def test_diff_writes_only_pages_that_changed_yet_keeps_the_rest(mega):
    session = mega()
    data = bytearray(random.Random(5).randbytes(40 * PAGE))
    operations.program(session, Image([(0, bytes(data))]))
    data[20 * PAGE + 1] ^= 0xFF
    result = operations.program(session, Image([(0, bytes(data))]), diff=True, verify=True)
    assert result["pages_written"] == 1
    assert sim_of(session).flash[: len(data)] == bytes(data)


def test_pages_the_bootloader_never_erases(mega):
    session = mega()
    flash = flash_region(session)
    # Blank there: writable.
    operations.write_bytes(session, flash, UNERASED + 0x10, b"\x12\x34")
    assert sim_of(session).flash[UNERASED + 0x10 : UNERASED + 0x12] == b"\x12\x34"
    # Not blank any more: a 0 bit cannot become 1 without an erase.
    with pytest.raises(TargetError, match="cannot be erased through this bootloader"):
        operations.write_bytes(session, flash, UNERASED + 0x10, b"\xff")
    assert "0x0003c000" in session.info.details["never_erased"]


def test_eeprom_round_trip_despite_the_read_address_bug(mega):
    session = mega()
    eeprom = session.memory_map.region("eeprom")
    data = random.Random(6).randbytes(eeprom.size)
    for address in range(0, eeprom.size, eeprom.page_size):
        session.bootloader.write_page(eeprom, address, data[address : address + eeprom.page_size])
    assert sim_of(session).eeprom == data
    assert operations.read_memory(session, eeprom, 0, eeprom.size) == data
    # Random access, backwards and odd: restarts from 0 and counts up.
    assert operations.read_memory(session, eeprom, 0x777, 9) == data[0x777:0x780]
    assert operations.read_memory(session, eeprom, 0x101, 3) == data[0x101:0x104]


def test_eeprom_with_exclamation_marks_on_an_old_build(mega):
    session = mega("&build=old")
    eeprom = session.memory_map.region("eeprom")
    operations.write_bytes(session, eeprom, 0x40, b"!!!!!!!x")
    sim = sim_of(session)
    assert sim.eeprom[0x40:0x48] == b"!!!!!!!x" and sim.firmware.monitor_runs == 0


def test_fuses_are_read_but_never_written_through_the_bootloader(mega):
    session = mega()
    boot = session.bootloader
    sim = sim_of(session)
    assert boot.read_fuses() == dict(zip(("lfuse", "hfuse", "efuse"), sim.fuses, strict=True))
    assert boot.read_lock() == sim.lock
    with pytest.raises(UnsupportedError, match="SPM cannot"):
        boot.write_fuse("hfuse", 0xD8)
    with pytest.raises(UnsupportedError):
        boot.write_lock(0x0F)
    with pytest.raises(UnsupportedError, match="erases nothing"):
        boot.erase_chip()


# Message 13 is the second CMD_PROGRAM_FLASH_ISP (after sign-on, 3 parameters,
# ENTER_PROGMODE, 3 signature bytes, the erase-pointer reset and LOAD_ADDRESS pairs).
@pytest.mark.parametrize(
    "fault", ["silent:13", "badsum:13", "badseq:13", "cksumerr:13", "silent:12", "drop:40"]
)
def test_line_faults_during_a_transfer_are_recovered(mega, fault):
    session = mega(f"&fault={fault}")
    data = random.Random(7).randbytes(24 * PAGE)
    operations.program(session, Image([(0, data)]), verify=True)
    assert sim_of(session).flash[: len(data)] == data


def test_old_build_accepts_the_resent_message_after_a_loss(mega):
    # Old builds take only sequence 1 or the next one: the resend must restart at 1.
    session = mega("&build=old&fault=silent:11")
    data = random.Random(8).randbytes(8 * PAGE)
    operations.program(session, Image([(0, data)]), verify=True)
    assert sim_of(session).flash[: len(data)] == data


def test_leaving_and_coming_back(mega):
    session = mega()
    data = random.Random(9).randbytes(4 * PAGE)
    operations.program(session, Image([(0, data)]))
    session.start_application()
    assert sim_of(session).mcu.wait_for_state("application")
    # The next command resets the board into the bootloader again.
    assert operations.read_memory(session, flash_region(session), 0, len(data)) == data
    assert session.reconnects == 1


def test_monitor_helpers_split_runs():
    page = bytes(range(0x10, 0x30)) * 8
    assert monitor_safe_passes(page) == [page]
    for data in (b"a!!!!!!!b", b"ab!!", b"!!!!!!"):
        passes = monitor_safe_passes(data)
        assert len(passes) == 2
        assert all(b"!!!" not in p and not p.endswith(b"!!") for p in passes)
        # Programming both (bits only go 1 -> 0) leaves exactly the data.
        assert bytes(f & s for f, s in zip(*passes, strict=True)) == data
    chunks = monitor_safe_chunks(b"x!!!!!y" + b"z" * 70, 64)
    assert b"".join(c for _, c in chunks) == b"x!!!!!y" + b"z" * 70
    assert all(b"!!" not in c and len(c) <= 64 for _, c in chunks)
    assert [o for o, _ in chunks] == [0, 2, 3, 4, 5, 69]
    assert monitor_safe_chunks(b"", 64) == [(0, b"")]
