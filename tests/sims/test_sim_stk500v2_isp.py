"""The STK500v2 ISP programmer model and the AVR behind it (docs/protocols/stk500v2.md
parts A and C, docs/protocols/avr-parts.md): raw framed exchanges on an in-process port.

The target decodes the SPI bytes the programmer forwards, so these tests also show that
wrong instruction bytes, delays or poll settings from the host give wrong results.
"""

from __future__ import annotations

import time

import pytest

from flashsh.sims.stk500v2_frame import Message, frame, read_message
from flashsh.sims.url import open_sim_port

FAST = {"mode": "isp", "chip": "atmega328p", "throttle": "0"}
ENTER = "10 c8 64 19 20 00 53 03 ac 53 00 00"
OK = b"\x00"


@pytest.fixture
def isp():
    ports = []

    def open_isp(query: str = ""):
        items = [item for item in query.split("&") if item]
        given = {item.partition("=")[0] for item in items}
        items += [f"{k}={v}" for k, v in FAST.items() if k not in given]
        port = open_sim_port("sim://stk500v2?" + "&".join(items), 115200)
        ports.append(port)
        assert port.sim.mcu.wait_for_state("bootloader")
        return port

    yield open_isp
    for port in ports:
        port.close()


def ask(port, body: str | bytes, seq: int = 1) -> bytes:
    data = bytes.fromhex(body) if isinstance(body, str) else body
    port.write(frame(seq, data))
    answer = read_message(port, 5.0)
    assert answer is not None, f"no answer to {data[:8].hex(' ')}"
    assert answer.checksum_ok and answer.seq == seq
    return answer.body


def enter(port, *, stab: int = 100, loops: int = 32, value: int = 0x53, index: int = 3,
          cmd: str = "ac 53 00 00") -> int:  # fmt: skip
    body = bytes([0x10, 200, stab, 25, loops, 0, value, index]) + bytes.fromhex(cmd)
    answer = ask(port, body)
    assert answer[0] == 0x10
    return answer[1]


def read(port, what: str) -> int:
    """Read one byte with READ_FUSE/LOCK/SIGNATURE/OSCCAL_ISP; ``what`` = "18 50 00 00"."""
    command, isp = what[:2], what[3:]
    answer = ask(port, f"{command} 04 {isp} 00")
    assert answer[1] == 0x00 and answer[3] == 0x00
    return answer[2]


def lfuse(port) -> int:
    return read(port, "18 50 00 00")


def hfuse(port) -> int:
    return read(port, "18 58 08 00")


def efuse(port) -> int:
    return read(port, "18 50 08 00")


def lock(port) -> int:
    return read(port, "1a 58 00 00")


def signature(port) -> bytes:
    return bytes(read(port, f"1b 30 00 {i:02x}") for i in range(3))


def write_fuse(port, second: int, value: int) -> bytes:
    answer = ask(port, bytes([0x17, 0xAC, second, 0x00, value]))
    time.sleep(0.010)  # as avrdude does: the part is busy for 4.5 ms
    return answer


def write_lock(port, value: int) -> bytes:
    answer = ask(port, bytes([0x19, 0xAC, 0xE0, 0x00, value]))
    time.sleep(0.010)
    return answer


def load(port, word: int) -> None:
    assert ask(port, "06 " + word.to_bytes(4, "big").hex(" ")) == b"\x06\x00"


def program(data: bytes, *, mode: int = 0xC1, delay: int = 6, eeprom: bool = False) -> bytes:
    n = len(data)
    cmds = (0x15, 0xC1, 0xC2, 0xA0) if eeprom else (0x13, 0x40, 0x4C, 0x20)
    return bytes([cmds[0], n >> 8, n & 0xFF, mode, delay, *cmds[1:], 0xFF, 0xFF]) + data


def read_memory(port, word: int, size: int, *, eeprom: bool = False) -> bytes:
    load(port, word)
    command = 0x16 if eeprom else 0x14
    answer = ask(port, bytes([command, size >> 8, size & 0xFF, 0xA0 if eeprom else 0x20]))
    assert answer[:2] == bytes([command, 0]) and answer[-1] == 0
    return answer[2:-1]


def write_page(port, word: int, data: bytes, **kw) -> bytes:
    load(port, word)
    return ask(port, program(data, **kw))


def chip_erase(port, delay: int = 9, method: int = 0) -> bytes:
    return ask(port, bytes([0x12, delay, method, 0xAC, 0x80, 0x00, 0x00]))


PAGE = bytes(range(128))


# ---------------------------------------------------------------------- framing


def test_the_fact_sheet_sample_isp_session(isp):
    port = isp()
    page = bytes(range(0x80))
    exchanges = [
        ("1b 01 00 01 0e 01 14", "1b 01 00 0b 0e 01 00 08 53 54 4b 35 30 30 5f 32 02"),
        ("1b 02 00 03 0e 02 9e 01 89", "1b 02 00 02 0e 02 00 17"),
        ("1b 03 00 0c 0e " + ENTER + " 30", "1b 03 00 02 0e 10 00 04"),
        ("1b 04 00 06 0e 1b 04 30 00 00 00 38", "1b 04 00 04 0e 1b 00 1e 00 10"),
        ("1b 05 00 06 0e 1b 04 30 00 01 00 38", "1b 05 00 04 0e 1b 00 95 00 9a"),
        ("1b 06 00 06 0e 1b 04 30 00 02 00 38", "1b 06 00 04 0e 1b 00 0f 00 03"),
        ("1b 07 00 05 0e 06 00 00 00 40 51", "1b 07 00 02 0e 06 00 16"),
        (frame(8, bytes.fromhex("13 00 80 c1 0a 40 4c 20 00 00") + page).hex(" "),
         "1b 08 00 02 0e 13 00 0c"),
        ("1b 09 00 05 0e 06 00 00 00 40 5f", "1b 09 00 02 0e 06 00 18"),
        ("1b 0a 00 04 0e 14 00 80 20 af", frame(10, b"\x14\x00" + page + b"\x00").hex(" ")),
        ("1b 0b 00 05 0e 17 ac a8 00 de d6", "1b 0b 00 03 0e 17 00 00 0a"),
    ]  # fmt: skip
    for request, expected in exchanges:
        port.write(bytes.fromhex(request))
        answer = read_message(port, 2.0)
        assert answer is not None, request
        assert frame(answer.seq, answer.body).hex(" ") == expected
    assert frame(10, b"\x14\x00" + page + b"\x00")[-1] == 0x88  # as the fact sheet says
    assert port.sim.flash[0x80:0x100] == page
    assert port.sim.fuses[1] == 0xDE


def test_a_bad_checksum_is_answered_with_answer_cksum_error(isp):
    port = isp()
    bad = bytearray(frame(7, bytes.fromhex("17 ac a0 00 ff")))
    bad[-1] ^= 0x55
    port.write(bytes(bad))
    assert read_message(port, 1.0) == Message(7, b"\xb0\xc1", True)
    assert port.sim.fuses[0] == 0x62  # not carried out


def test_an_avrisp_signs_on_as_avrisp_2(isp):
    assert ask(isp("programmer=avrisp"), "01") == b"\x01\x00\x08AVRISP_2"


def test_parameters(isp):
    port = isp()
    for param in (0x90, 0x91, 0x92, 0x9A, 0x94, 0x95, 0x96, 0x97, 0x98):
        assert ask(port, f"03 {param:02x}")[:2] == b"\x03\x00", hex(param)
    assert ask(port, "03 94") == b"\x03\x00\x32"  # 5.0 V
    assert ask(port, "03 98") == b"\x03\x00\x02"
    assert ask(port, "02 98 05") == b"\x02\x00"
    assert ask(port, "03 98") == b"\x03\x00\x05"
    assert ask(port, "03 77") == b"\x03\xc0"  # no such parameter
    assert ask(port, "02 90 07") == b"\x02\xc0"  # hardware version is read-only
    assert ask(port, "05") == b"\x05\xc9"  # CMD_OSCCAL: not modelled


# ---------------------------------------------------------------------- entering


def test_enter_progmode_with_avrdudes_values_enables_the_target(isp):
    port = isp()
    assert enter(port) == 0x00
    assert signature(port) == bytes.fromhex("1e950f")
    assert read(port, "1c 38 00 00") == 0x9C  # calibration byte


def test_programming_enable_needs_20_ms_of_reset(isp):
    port = isp()
    # 32 tries at 115.2 kHz take 9 ms: never 20 ms after RESET went low.
    assert enter(port, stab=0) == 0xC0
    assert signature(port) == bytes(3)
    assert enter(port, stab=20) == 0x00


def test_the_echo_must_match_the_poll_value(isp):
    port = isp()
    # The target is enabled, but the programmer compares with the wrong value.
    assert enter(port, value=0x54) == 0xC0
    assert signature(port) == bytes.fromhex("1e950f")
    # No check at all: OK, whatever the instruction did.
    assert enter(port, index=0, cmd="ac 54 00 00") == 0x00
    assert signature(port) == bytes(3)


def test_reset_polarity_and_supply_matter(isp):
    port = isp()
    assert ask(port, "02 9e 00") == b"\x02\x00"  # AT89 polarity: the AVR runs
    assert enter(port) == 0xC0
    assert ask(port, "02 9e 01") == b"\x02\x00"
    assert ask(port, "02 94 00") == b"\x02\x00"  # no target supply
    assert enter(port) == 0xC0
    assert ask(port, "02 94 32") == b"\x02\x00"
    assert enter(port) == 0x00


def test_sck_must_stay_below_a_quarter_of_the_target_clock(isp):
    port = isp()
    assert ask(port, "02 98 01") == b"\x02\x00"  # 460.8 kHz against 1 MHz
    assert enter(port) == 0xC0
    assert ask(port, "02 98 02") == b"\x02\x00"  # 115.2 kHz
    assert enter(port) == 0x00
    # Crystal, no division: counts only once programming mode ends.
    assert write_fuse(port, 0xA0, 0xFF) == b"\x17\x00\x00"
    assert lfuse(port) == 0xFF
    assert port.sim.target.cpu_hz == 1e6
    assert ask(port, "11 01 01") == b"\x11\x00"
    assert port.sim.target.cpu_hz == 16e6
    assert ask(port, "02 98 00") == b"\x02\x00"  # 1.8432 MHz against 16 MHz
    assert enter(port) == 0x00


def test_a_programmed_rstdisbl_locks_isp_out_for_good(isp):
    port = isp()
    assert enter(port) == 0x00
    assert write_fuse(port, 0xA8, 0x59) == b"\x17\x00\x00"  # 0xD9 with RSTDISBL = 0
    assert hfuse(port) == 0x59  # still in programming mode: readable
    assert ask(port, "11 01 01") == b"\x11\x00"
    assert enter(port) == 0xC0
    assert "RSTDISBL" in "\n".join(e.what for e in port.sim.mcu.events)


# ---------------------------------------------------------------------- the SPI level


def test_spi_multi_shows_the_targets_echo(isp):
    port = isp()
    assert enter(port) == 0x00
    # Each byte out is the byte before it in; a read puts its data in the 4th.
    assert ask(port, "1d 04 04 00 30 00 01 00") == b"\x1d\x00\x00\x30\x00\x95\x00"
    assert ask(port, "1d 04 04 00 ac 53 00 00") == b"\x1d\x00\x00\xac\x53\x00\x00"
    # More bytes to receive than to send: zeros are clocked out for them.
    assert ask(port, "1d 03 01 03 30 00 02") == b"\x1d\x00\x0f\x00"


def test_a_torn_instruction_throws_the_target_out_of_step(isp):
    port = isp()
    assert enter(port) == 0x00
    assert ask(port, "1d 03 00 00 30 00 00") == b"\x1d\x00\x00"  # three bytes only
    assert signature(port) != bytes.fromhex("1e950f")
    assert enter(port) == 0x00  # a new reset pulse starts the count again
    assert signature(port) == bytes.fromhex("1e950f")


def test_ret_addr_picks_the_received_byte(isp):
    port = isp("fuses=ff:de:fd")
    assert enter(port) == 0x00
    assert ask(port, "18 04 50 00 00 00") == b"\x18\x00\xff\x00"
    assert ask(port, "18 03 50 00 00 00") == b"\x18\x00\x00\x00"  # the echo of byte 2
    assert ask(port, "18 04 58 00 00 00") == b"\x18\x00\xff\x00"  # 58 00: the lock byte


# ---------------------------------------------------------------------- fuses and locks


def test_factory_fuses_of_each_part(isp):
    factory = {
        "atmega168": (0x62, 0xDF, 0xF9),
        "atmega328p": (0x62, 0xD9, 0xFF),
        "atmega2560": (0x62, 0x99, 0xFF),
        "atmega1284p": (0x62, 0x99, 0xFF),
        "atmega32u4": (0x52, 0x99, 0xF3),
    }
    for chip, fuses in factory.items():
        port = isp(f"chip={chip}")
        assert enter(port) == 0x00, chip
        assert (lfuse(port), hfuse(port), efuse(port), lock(port)) == (*fuses, 0xFF)


def test_fuses_read_back_masked(isp):
    port = isp()
    assert enter(port) == 0x00
    assert write_fuse(port, 0xA4, 0x05) == b"\x17\x00\x00"  # avrdude sends v & 0x07
    assert efuse(port) == 0xFD
    assert write_fuse(port, 0xA8, 0xFF) == b"\x17\x00\x00"  # try to turn SPIEN off
    assert hfuse(port) == 0xDF
    assert write_lock(port, 0x0F) == b"\x19\x00\x00"
    assert lock(port) == 0xCF
    assert port.sim.fuses == (0x62, 0xDF, 0xFD)


def test_a_fuse_read_too_soon_after_a_write_finds_the_part_busy(isp):
    port = isp()
    assert enter(port) == 0x00

    def burst(*bodies: str) -> list[bytes]:
        # Back to back, so no host-side pause can let the 4.5 ms pass.
        port.write(b"".join(frame(i + 1, bytes.fromhex(b)) for i, b in enumerate(bodies)))
        answers = [read_message(port, 1.0) for _ in bodies]
        assert all(a is not None for a in answers)
        return [a.body for a in answers if a is not None]

    # Busy for 4.5 ms: the read gets 0xFF, not the value.
    assert burst("17 ac a0 00 e2", "18 04 50 00 00 00")[1] == b"\x18\x00\xff\x00"
    time.sleep(0.01)
    assert lfuse(port) == 0xE2
    # A second write right after the first is not carried out.
    burst("17 ac a0 00 ff", "17 ac a0 00 62")
    time.sleep(0.01)
    assert lfuse(port) == 0xFF
    assert [why for why, _ in port.sim.target.stats.ignored] == ["busy"]


def test_lock_bits_only_ever_get_programmed(isp):
    port = isp()
    assert enter(port) == 0x00
    assert write_lock(port, 0xEF) == b"\x19\x00\x00"
    assert write_lock(port, 0xFF) == b"\x19\x00\x00"  # no way back
    assert lock(port) == 0xEF
    assert write_lock(port, 0xFB) == b"\x19\x00\x00"
    assert lock(port) == 0xEB


def test_lock_mode_2_stops_programming_but_not_reading(isp, tmp_path):
    image = tmp_path / "app.bin"
    image.write_bytes(PAGE)
    port = isp(f"lock=fe&image={image}")
    assert enter(port) == 0x00
    assert write_page(port, 0x40, bytes(128)) == b"\x13\x00"
    assert port.sim.flash[0x80:0x100] == b"\xff" * 128
    assert write_fuse(port, 0xA0, 0xFF) == b"\x17\x00\x00"
    assert lfuse(port) == 0x62
    assert read_memory(port, 0, 128) == PAGE


def test_lock_mode_3_stops_reading_too_and_freezes_the_boot_lock_bits(isp, tmp_path):
    image = tmp_path / "app.bin"
    image.write_bytes(PAGE)
    port = isp(f"lock=fc&image={image}")
    assert enter(port) == 0x00
    assert read_memory(port, 0, 128) == b"\xff" * 128
    assert read_memory(port, 0, 8, eeprom=True) == b"\xff" * 8
    assert signature(port) == bytes.fromhex("1e950f")
    assert (lfuse(port), lock(port)) == (0x62, 0xFC)
    assert write_lock(port, 0xC0) == b"\x19\x00\x00"
    assert lock(port) == 0xFC
    assert port.sim.flash[:128] == PAGE


@pytest.mark.parametrize(("hfuse_value", "eeprom_kept"), [(0xD9, False), (0xD1, True)])
def test_chip_erase_clears_locks_flash_and_eeprom_unless_eesave(
    isp, tmp_path, hfuse_value, eeprom_kept
):
    image = tmp_path / "app.bin"
    image.write_bytes(PAGE)
    port = isp(f"lock=cc&fuses=ff:{hfuse_value:02x}:fd&image={image}")
    port.sim.memory.eeprom[:4] = b"\x01\x02\x03\x04"
    assert enter(port) == 0x00
    assert chip_erase(port) == b"\x12\x00"
    assert lock(port) == 0xFF
    assert port.sim.flash == b"\xff" * 0x8000
    assert (port.sim.eeprom[:4] == b"\x01\x02\x03\x04") == eeprom_kept
    assert (lfuse(port), hfuse(port), efuse(port)) == (0xFF, hfuse_value, 0xFD)


# ---------------------------------------------------------------------- memories


def test_a_page_written_without_erase_ands_into_the_old_contents(isp, tmp_path):
    image = tmp_path / "app.bin"
    image.write_bytes(b"\x0f" * 128)
    port = isp(f"image={image}")
    assert enter(port) == 0x00
    assert write_page(port, 0, b"\xf3" * 128) == b"\x13\x00"
    assert read_memory(port, 0, 128) == b"\x03" * 128
    assert chip_erase(port) == b"\x12\x00"
    assert write_page(port, 0, b"\xf3" * 128) == b"\x13\x00"
    assert read_memory(port, 0, 128) == b"\xf3" * 128


def test_timed_writes_that_wait_too_little_lose_data(isp):
    port = isp()
    assert enter(port) == 0x00
    # Page mode, timed, 1 ms: the page needs 4.5 ms, so the next page's first loads
    # arrive while the part is busy. Both pages go out in one burst.
    first = frame(1, b"\x06\x00\x00\x00\x00") + frame(2, program(PAGE, mode=0x91, delay=1))
    second = frame(3, b"\x06\x00\x00\x00\x40") + frame(4, program(PAGE, mode=0x91, delay=1))
    port.write(first + second)
    for _ in range(4):
        assert read_message(port, 2.0) is not None
    flash = port.sim.flash
    assert flash[:128] == PAGE
    assert flash[128:140] == b"\xff" * 12  # loads ignored while busy
    assert flash[140:256] == PAGE[12:]
    assert any(why == "busy" for why, _ in port.sim.target.stats.ignored)


def test_rdy_bsy_and_value_polling_wait_just_long_enough(isp):
    port = isp()
    assert enter(port) == 0x00
    burst = b"".join(
        frame(2 * i + 1, bytes([0x06, 0, 0, 0, 0x40 * i]))
        + frame(2 * i + 2, program(PAGE, mode=mode, delay=1))
        for i, mode in enumerate((0xC1, 0xC1, 0xA1, 0xA1))
    )
    port.write(burst)
    for _ in range(8):
        assert read_message(port, 2.0) is not None
    assert port.sim.flash[: 4 * 128] == PAGE * 4
    assert port.sim.target.stats.ignored == []


def test_chip_erase_delay_counts(isp, tmp_path):
    image = tmp_path / "app.bin"
    image.write_bytes(b"\x00" * 128)
    port = isp(f"image={image}")
    assert enter(port) == 0x00
    erase = bytes([0x12, 0, 0, 0xAC, 0x80, 0x00, 0x00])  # no delay at all
    port.write(frame(1, erase) + frame(2, b"\x1b\x04\x30\x00\x00\x00"))
    assert read_message(port, 1.0) == Message(1, b"\x12\x00", True)
    assert read_message(port, 1.0) == Message(2, b"\x1b\x00\xff\x00", True)  # still busy
    assert chip_erase(port, delay=0, method=1) == b"\x12\x00"  # RDY/BSY polling
    assert signature(port) == bytes.fromhex("1e950f")


def test_eeprom_page_and_byte_writes(isp):
    port = isp()
    assert enter(port) == 0x00
    load(port, 0x10)
    page_mode = program(b"\x11\x22\x33\x44", mode=0xC1, delay=20, eeprom=True)
    assert ask(port, page_mode) == b"\x15\x00"
    load(port, 0x20)
    # Word (byte) mode, timed: Write EEPROM (C0) for each byte, no page command.
    byte_mode = bytes.fromhex("15 00 02 02 14 c0 00 a0 ff ff 55 66")
    assert ask(port, byte_mode) == b"\x15\x00"
    assert port.sim.eeprom[0x10:0x14] == b"\x11\x22\x33\x44"
    assert port.sim.eeprom[0x20:0x22] == b"\x55\x66"
    assert read_memory(port, 0x10, 4, eeprom=True) == b"\x11\x22\x33\x44"


def test_bit_31_makes_the_programmer_load_the_extended_address(isp):
    port = isp("chip=atmega2560")
    assert enter(port) == 0x00
    page = bytes(range(256))
    assert write_page(port, 0x80010000, page) == b"\x13\x00"
    assert port.sim.flash[0x20000:0x20100] == page
    # Across the 64 K-word line in one read: the firmware loads the next bank itself.
    assert write_page(port, 0x8000FF80, page) == b"\x13\x00"
    assert read_memory(port, 0x8000FFC0, 256) == page[128:] + page[:128]


def test_without_bit_31_the_extended_address_stays_as_it_was(isp):
    port = isp("chip=atmega2560")
    assert enter(port) == 0x00
    page = bytes(range(256))
    assert write_page(port, 0x00000000, page) == b"\x13\x00"
    assert port.sim.flash[:256] == page
    assert write_page(port, 0x80010080, page) == b"\x13\x00"
    assert write_page(port, 0x00000100, page) == b"\x13\x00"  # lands above 128 KiB
    assert port.sim.flash[0x20200:0x20300] == page
    assert port.sim.flash[0x200:0x300] == b"\xff" * 256


# ---------------------------------------------------------------------- options, faults


def test_a_locked_chip_from_the_options(isp):
    port = isp("fuses=ff:de:05&lock=0f")
    assert enter(port) == 0x00
    assert (lfuse(port), hfuse(port), efuse(port), lock(port)) == (0xFF, 0xDE, 0xFD, 0xCF)


def test_cksumerr_fault_is_not_carried_out(isp):
    port = isp("fault=cksumerr:2")
    assert enter(port) == 0x00
    assert write_fuse(port, 0xA0, 0xFF) == b"\xb0\xc1"
    assert lfuse(port) == 0x62


def test_mode_options_are_checked():
    with pytest.raises(ValueError, match="does not apply"):
        open_sim_port("sim://stk500v2?mode=isp&build=old", 115200)
    with pytest.raises(ValueError, match="does not apply"):
        open_sim_port("sim://stk500v2?programmer=avrisp", 115200)
    with pytest.raises(ValueError, match="lfuse:hfuse:efuse"):
        open_sim_port("sim://stk500v2?mode=isp&fuses=ff:de", 115200)
    with pytest.raises(ValueError, match="Mega 2560 build"):
        open_sim_port("sim://stk500v2?chip=atmega328p", 115200)
