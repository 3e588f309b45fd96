"""The Mega 2560 stk500v2 bootloader model against docs/protocols/stk500v2.md part B.

Raw framed exchanges on an in-process port: checksums and sequence numbers, the fake
answers, address handling, the sequential erase pointer, the "!!!" monitor and the
entry/exit timing. The timings and the monitor's odd output were measured on the
shipped hex in simavr (see flashsh/sims/stk500v2_boot.py).
"""

from __future__ import annotations

import time

import pytest

from flashsh.sims.stk500v2_frame import Message, frame, read_message
from flashsh.sims.url import open_sim_port

FAST = {"throttle": "0", "startup_ms": "0"}
ENTER = "10 c8 64 19 20 00 53 03 ac 53 00 00"
# The monitor's texts as the shipped build has them, at their 16-bit addresses.
TEXTS = {
    0xE2D5: b"Huh?",
    0xE2DA: b"Bootloader>",
    0xE2E6: b"Arduino explorer stk500V2 by MLS",
    0xE117: b"Q=Quit",
    0xE136: b"F=Dump FLASH",
}


@pytest.fixture
def board():
    ports = []

    def open_board(query: str = "", *, settle: bool = True):
        items = [item for item in query.split("&") if item]
        given = {item.partition("=")[0] for item in items}
        items += [f"{k}={v}" for k, v in FAST.items() if k not in given]
        port = open_sim_port("sim://stk500v2?" + "&".join(items), 115200)
        ports.append(port)
        if settle:
            assert port.sim.mcu.wait_for_state("bootloader"), port.sim.mcu.events
        return port

    yield open_board
    for port in ports:
        port.close()


def ask(port, body: str | bytes, seq: int = 1) -> Message:
    data = bytes.fromhex(body) if isinstance(body, str) else body
    port.write(frame(seq, data))
    answer = read_message(port, 2.0)
    assert answer is not None, f"no answer to {data[:8].hex(' ')}: {port.sim.mcu.events[-5:]}"
    assert answer.checksum_ok and answer.seq == seq
    return answer


def silent(port, seconds: float = 0.2) -> bytes:
    port.timeout = seconds
    return port.read(4096)


def load(word: int, bit31: bool = True) -> str:
    return (word | (0x80000000 if bit31 else 0)).to_bytes(4, "big").hex(" ")


def program(data: bytes) -> bytes:
    n = len(data)
    return bytes([0x13, n >> 8, n & 0xFF, 0xC1, 0x0A, 0x40, 0x4C, 0x20, 0, 0]) + data


def read_flash(port, word: int, size: int = 256, *, bit31: bool = True) -> bytes:
    assert ask(port, "06 " + load(word, bit31)).body == b"\x06\x00"
    body = ask(port, bytes([0x14, size >> 8, size & 0xFF, 0x20])).body
    assert body[:2] == b"\x14\x00" and body[-1] == 0
    return body[2:-1]


def write_pages(port, image: bytes, first_word: int = 0) -> None:
    for offset in range(0, len(image), 256):
        assert ask(port, "06 " + load(first_word + offset // 2)).body == b"\x06\x00"
        assert ask(port, program(image[offset : offset + 256])).body == b"\x13\x00"


def image_file(tmp_path, data: bytes, name: str = "app.bin") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def strings_app(tmp_path) -> str:
    """An application whose lower 64 KiB holds the monitor's texts where it reads them."""
    app = bytearray(0x10000)
    app[0:4] = bytes.fromhex("0c947200")
    for address, text in TEXTS.items():
        app[address : address + len(text) + 1] = text + b"\x00"
    return image_file(tmp_path, bytes(app), "strings.bin")


# ---------------------------------------------------------------------- the protocol


def test_the_fact_sheet_sample_session(board):
    port = board("fuses=ff:d8:fd&lock=cf")
    exchanges = [
        ("1b 01 00 01 0e 01 14", "1b 01 00 0b 0e 01 00 08 41 56 52 49 53 50 5f 32 74"),
        ("1b 02 00 0c 0e " + ENTER + " 31", "1b 02 00 02 0e 10 00 05"),
        ("1b 03 00 06 0e 1b 04 30 00 00 00 3f", "1b 03 00 04 0e 1b 00 1e 00 17"),
        ("1b 04 00 06 0e 1b 04 30 00 01 00 39", "1b 04 00 04 0e 1b 00 98 00 96"),
        ("1b 05 00 06 0e 1b 04 30 00 02 00 3b", "1b 05 00 04 0e 1b 00 01 00 0e"),
        ("1b 06 00 05 0e 06 80 00 00 00 90", "1b 06 00 02 0e 06 00 17"),
        ("1b 10 00 07 0e 12 09 00 ac 80 00 00 35", "1b 10 00 02 0e 12 c0 d5"),
        ("1b 0a 00 06 0e 18 04 50 00 00 00 55", "1b 0a 00 04 0e 18 00 ff 00 fc"),
        ("1b 0e 00 03 0e 11 01 01 09", "1b 0e 00 02 0e 11 00 08"),
    ]
    for request, expected in exchanges:
        port.write(bytes.fromhex(request))
        answer = read_message(port, 1.0)
        assert answer is not None
        assert frame(answer.seq, answer.body).hex(" ") == expected


def test_page_0_of_the_fact_sheet_is_written_and_read_back(board):
    port = board()
    page = bytes.fromhex("0c947200") + b"\xff" * 252
    request = frame(7, program(page))
    assert request[-1] == 0x06  # the checksum the fact sheet gives
    port.write(request)
    assert read_message(port, 1.0) == Message(7, b"\x13\x00", True)
    assert port.sim.flash[:256] == page
    assert read_flash(port, 0) == page


@pytest.mark.parametrize("seq", [0x00, 0x01, 0x7F, 0xFF])
def test_the_answer_carries_the_hosts_sequence_number(board, seq):
    port = board()
    assert ask(port, "01", seq).body == b"\x01\x00\x08AVRISP_2"
    assert ask(port, "01", seq).body[:2] == b"\x01\x00"  # the same number again is fine


def test_a_bad_checksum_or_token_is_dropped_without_answer(board):
    port = board()
    bad = bytearray(frame(1, b"\x01"))
    bad[-1] ^= 0x01
    port.write(bytes(bad))
    assert silent(port) == b""
    port.write(bytes.fromhex("1b 02 00 01 0f 01 15"))  # token 0x0F, checksum right
    assert silent(port) == b""
    assert ask(port, "01", 3).body[:2] == b"\x01\x00"
    assert "bad checksum" in " ".join(e.what for e in port.sim.mcu.events)


def test_parameters_and_the_commands_it_just_acknowledges(board):
    port = board()
    for param, value in [(0x90, 0x0F), (0x91, 0x02), (0x92, 0x0A), (0x80, 0), (0x94, 0)]:
        assert ask(port, f"03 {param:02x}").body == bytes([0x03, 0x00, value])
    assert ask(port, "02 98 05").body == b"\x02\x00"
    assert ask(port, "10 00 00 00 00 00 00 00 00 00 00 00").body == b"\x10\x00"


@pytest.mark.parametrize("command", ["04", "05 00", "17 ac a0 00 ff", "1c 04 38 00 00 00", "7f"])
def test_unsupported_commands_answer_failed(board, command):
    port = board()
    assert ask(port, command).body == bytes([int(command[:2], 16), 0xC0])


def test_chip_erase_answers_failed_and_erases_nothing(board, tmp_path):
    image = bytes(range(256)) * 4
    port = board("image=" + image_file(tmp_path, image))
    assert ask(port, "12 09 00 ac 80 00 00").body == b"\x12\xc0"
    assert port.sim.flash[:1024] == image


def test_spi_multi_gives_its_fake_answers(board):
    port = board("fuses=ff:d8:fd&lock=cf")
    cases = {
        "30 00 01 00": 0x98,  # signature byte 1
        "50 00 00 00": 0xFF,  # low fuse
        "50 08 00 00": 0xFF,  # extended fuse asked, low fuse given
        "58 08 00 00": 0xD8,  # high fuse
        "58 00 00 00": 0xD8,  # lock asked, high fuse given
        "20 00 00 00": 0x00,  # anything else
    }
    for isp, value in cases.items():
        first = int(isp[:2], 16)
        expected = bytes([0x1D, 0x00, 0x00, first, 0x00, value, 0x00])
        assert ask(port, "1d 04 04 00 " + isp).body == expected
    # Always 7 bytes, whatever NumRx says.
    assert len(ask(port, "1d 04 01 03 30 00 00 00").body) == 7


def test_read_fuse_and_lock_give_the_chips_values(board):
    port = board("fuses=ff:d8:fd&lock=cf")
    assert ask(port, "18 04 50 00 00 00").body == b"\x18\x00\xff\x00"
    assert ask(port, "18 04 58 08 00 00").body == b"\x18\x00\xd8\x00"
    assert ask(port, "18 04 50 08 00 00").body == b"\x18\x00\xfd\x00"
    assert ask(port, "1a 04 58 00 00 00").body == b"\x1a\x00\xcf\x00"
    # Unused extended fuse bits read 1 even when the option leaves them 0.
    port2 = board("fuses=ff:d8:05")
    assert ask(port2, "18 04 50 08 00 00").body == b"\x18\x00\xfd\x00"


def test_spm_obeys_the_boot_lock_bits(board, tmp_path):
    image = bytes(range(256))
    port = board("lock=ff&image=" + image_file(tmp_path, image))
    # BLB01 programmed through the bootloader itself: no more SPM in the application.
    assert ask(port, "19 ac e0 00 fb").body == b"\x19\x00\x00"
    assert ask(port, "06 " + load(0)).body == b"\x06\x00"
    assert ask(port, program(bytes(256))).body == b"\x13\x00"  # answered OK regardless
    assert port.sim.flash[:256] == image
    assert port.sim.memory.stats.boot_writes_refused == [0, 0]  # the erase and the write


def test_program_lock_only_ever_programs_boot_lock_bits(board):
    port = board("lock=ff")
    for value, lock in [(0x0F, 0xCF), (0xFF, 0xCF), (0x3C, 0xCF), (0x00, 0xC3)]:
        assert ask(port, f"19 ac e0 00 {value:02x}").body == b"\x19\x00\x00"
        assert ask(port, "1a 04 58 00 00 00").body == bytes([0x1A, 0, lock, 0])
    assert port.sim.lock == 0xC3  # LB1/LB2 never touched


# ---------------------------------------------------------------------- flash and EEPROM


def test_pages_in_order_across_the_128k_line_with_bit_31(board):
    port = board()
    image = bytes((i * 131 + (i >> 8)) & 0xFF for i in range(0x20000 + 0x800))
    write_pages(port, image)
    assert port.sim.flash[: len(image)] == image
    # Above 128 KiB: word 0x10000 with and without bit 31 reads the same bytes.
    assert read_flash(port, 0x10000) == image[0x20000:0x20100]
    assert read_flash(port, 0x10000, bit31=False) == image[0x20000:0x20100]
    assert port.sim.flash[0x3E000:0x3E00E] == b"stk500boot_v2 "


def test_the_page_erased_is_the_next_in_a_row_not_the_one_written(board, tmp_path):
    port = board("image=" + image_file(tmp_path, bytes(0x300)))  # 3 programmed pages
    new = bytes([0x5A]) * 256
    assert ask(port, "06 " + load(0x100)).body == b"\x06\x00"  # page 2
    assert ask(port, program(new)).body == b"\x13\x00"
    flash = port.sim.flash
    assert flash[0:256] == b"\xff" * 256, "page 0 was erased instead"
    assert flash[0x200:0x300] == bytes(256), "page 2 was written unerased (0x00 AND 0x5A)"
    # CHIP_ERASE starts the row again: the next write erases page 0 once more.
    assert ask(port, "12 09 00 ac 80 00 00").body == b"\x12\xc0"
    assert ask(port, "06 " + load(0x80)).body == b"\x06\x00"  # page 1
    assert ask(port, program(new)).body == b"\x13\x00"
    assert port.sim.flash[0x100:0x200] == bytes(256)  # page 1 not erased: AND gives 0


def test_pages_from_0x3c000_up_are_never_erased(board, tmp_path):
    image = bytearray(b"\xff" * 0x3C100)
    image[0x3C000:0x3C100] = bytes(256)
    port = board("image=" + image_file(tmp_path, bytes(image)))
    # Move the erase pointer to APP_END with short writes (one word each, page 0).
    for _ in range(0x3C000 // 256):
        port.write(frame(1, program(b"\xff\xff")))
    for _ in range(0x3C000 // 256):
        assert read_message(port, 2.0) == Message(1, b"\x13\x00", True)
    assert port.sim.memory.stats.page_erases == 0x3C000 // 256
    assert ask(port, "06 " + load(0x3C000 // 2)).body == b"\x06\x00"
    assert ask(port, program(b"\x5a" * 256)).body == b"\x13\x00"
    assert port.sim.memory.stats.page_erases == 0x3C000 // 256
    assert port.sim.flash[0x3C000:0x3C100] == bytes(256)


def test_eeprom_writes_land_right_and_reads_start_at_twice_the_address(board):
    port = board()
    data = bytes(range(0x40, 0x48))
    assert ask(port, "06 00 00 00 10").body == b"\x06\x00"
    assert ask(port, b"\x15\x00\x08\xc1\x0a\xc1\xc2\xa0\x00\x00" + data).body == b"\x15\x00"
    assert port.sim.eeprom[0x10:0x18] == data
    # Reads begin at 2 x 0x10 = 0x20 (erased) ...
    assert ask(port, "06 00 00 00 10").body == b"\x06\x00"
    assert ask(port, "16 00 08 a0").body == b"\x16\x00" + b"\xff" * 8 + b"\x00"
    # ... so half the address reads the data back.
    assert ask(port, "06 00 00 00 08").body == b"\x06\x00"
    assert ask(port, "16 00 08 a0").body == b"\x16\x00" + data + b"\x00"


def test_an_odd_flash_length_hangs_until_reset(board):
    port = board()
    port.write(frame(1, program(b"\x00\x01\x02")))
    assert silent(port) == b""
    assert "never ends" in events(port)
    port.dtr = False
    port.dtr = True
    assert port.sim.mcu.wait_for_state("bootloader")
    assert ask(port, "01", 2).body[:2] == b"\x01\x00"


# ---------------------------------------------------------------------- the monitor


def test_three_exclamation_marks_start_the_monitor(board, tmp_path):
    port = board("image=" + strings_app(tmp_path))
    port.write(b"!!!")
    port.timeout = 0.5
    lines = (b"!" * 25 + b"\r\n") * 5
    expected = lines + b"Arduino explorer stk500V2 by MLS\r\nBootloader>"
    assert port.read(len(expected)) == expected
    port.write(b"x")
    assert port.read(19) == b"X Huh?\r\nBootloader>"
    port.write(b"f")  # a real command: its help line (its hex dump is not modelled)
    assert port.read(14) == b"F Dump FLASH\r\n"
    assert port.read(11) == b"Bootloader>"
    port.write(b"q")
    # Quit, then the stale message buffer is answered once (sequence 0), then it leaves.
    assert port.read(8 + 8) == b"Q Quit\r\n" + frame(0, b"\x00\xc0")
    assert port.sim.mcu.wait_for_state("application")


def test_on_a_blank_board_the_monitor_prints_0xff_for_ever(board):
    port = board()
    port.write(b"!!!")
    port.timeout = 1.0
    lines = (b"!" * 25 + b"\r\n") * 5
    got = port.read(len(lines) + 1000)
    assert got[: len(lines)] == lines
    assert got[len(lines) :] == b"\xff" * 1000
    port.write(b"q")  # never read: it is still printing
    assert port.sim.state == "bootloader"


def test_exclamation_marks_after_the_ninth_byte_are_harmless(board):
    port = board()
    assert ask(port, "01").body[:2] == b"\x01\x00"
    port.write(b"!!!")
    assert ask(port, "01", 2).body[:2] == b"\x01\x00"
    page = b"!!!!" * 64
    write_pages(port, page)
    assert port.sim.flash[:256] == page
    assert port.sim.firmware.monitor_runs == 0


def test_old_builds_trap_exclamation_marks_anywhere(board):
    port = board("build=old")
    assert ask(port, "01").body[:2] == b"\x01\x00"
    assert ask(port, "06 " + load(0), 2).body == b"\x06\x00"
    port.write(frame(3, program(b"!!!!" * 64)))
    port.timeout = 0.5
    assert port.read(25) == b"!" * 25
    assert port.sim.firmware.monitor_runs == 1


def test_old_builds_check_sequence_numbers_and_acknowledge_chip_erase(board):
    port = board("build=old")
    port.write(frame(5, b"\x01"))  # neither 1 nor the expected number (0)
    assert silent(port) == b""
    assert ask(port, "01", 1).body[:2] == b"\x01\x00"
    assert ask(port, "01", 2).body[:2] == b"\x01\x00"  # its own count went on to 2
    assert ask(port, "12 09 00 ac 80 00 00", 3).body == b"\x12\x00"


# ---------------------------------------------------------------------- entry and exit


def events(port) -> str:
    return "\n".join(e.what for e in port.sim.mcu.events)


def test_without_a_first_byte_the_application_starts(board, tmp_path):
    port = board("image=" + image_file(tmp_path, b"\x0c\x94\x72\x00"), settle=False)
    assert port.sim.mcu.wait_for_state("bootloader")
    start = time.monotonic()
    assert port.sim.mcu.wait_for_state("application", 2.0)
    # 0.783 s wait plus the exit path (no throttle here, so the 50 ms are not waited).
    assert 0.7 < time.monotonic() - start < 1.3


def test_a_blank_board_keeps_restarting_its_bootloader(board):
    port = board()
    time.sleep(1.0)
    assert "running through it into the bootloader" in events(port)
    assert port.sim.state == "bootloader"
    assert ask(port, "01").body[:2] == b"\x01\x00"


def test_after_the_first_byte_silence_starts_an_application_only(board, tmp_path):
    app = image_file(tmp_path, b"\x0c\x94\x72\x00")
    port = board("getch_ms=200&image=" + app)
    assert ask(port, "01").body[:2] == b"\x01\x00"
    assert port.sim.mcu.wait_for_state("application", 1.0)
    assert "receive timeout" in events(port)
    blank = board("getch_ms=200")
    assert ask(blank, "01").body[:2] == b"\x01\x00"
    time.sleep(0.6)
    assert blank.sim.state == "bootloader"
    assert ask(blank, "01", 2).body[:2] == b"\x01\x00"


def test_leave_progmode_starts_the_application_50_ms_later(board, tmp_path):
    port = board("throttle=1&image=" + image_file(tmp_path, b"\x0c\x94\x72\x00"))
    assert ask(port, "11 01 01").body == b"\x11\x00"
    assert port.sim.mcu.wait_for_state("application", 1.0)
    times = {e.what: e.t for e in port.sim.mcu.events}
    delay = times["application started"] - times["stk500boot_v2: leaving the bootloader"]
    assert delay == pytest.approx(0.050, abs=0.005)


def test_leave_progmode_on_a_blank_board_comes_back(board):
    port = board()
    assert ask(port, "11 01 01").body == b"\x11\x00"
    time.sleep(0.1)
    assert port.sim.state == "bootloader"
    assert ask(port, "01", 2).body[:2] == b"\x01\x00"


@pytest.mark.parametrize(
    ("size", "state"), [(0x100, "bootloader"), (0x20100, "application")], ids=["small", "large"]
)
def test_a_watchdog_reset_enters_at_0x20000(board, tmp_path, size, state):
    port = board("image=" + image_file(tmp_path, bytes(size)))
    assert ask(port, "11 01 01").body == b"\x11\x00"
    assert port.sim.mcu.wait_for_state("application")
    # The application turns the watchdog on and lets it fire.
    port.sim.mcu.wdt_config(0.016)
    port.sim.to_target.wake()
    time.sleep(0.1)
    assert port.sim.mcu.resets.get("watchdog") == 1
    assert port.sim.state == state
    if state == "bootloader":
        assert "erased flash from 0x20000" in events(port)
        assert ask(port, "01").body[:2] == b"\x01\x00"


def test_old_builds_reset_loop_after_a_watchdog_reset(board, tmp_path):
    port = board("build=old&image=" + image_file(tmp_path, b"\x0c\x94\x72\x00"))
    assert ask(port, "11 01 01").body == b"\x11\x00"
    assert port.sim.mcu.wait_for_state("application")
    resets = port.sim.mcu.resets
    port.sim.mcu.wdt_config(0.016)
    port.sim.to_target.wake()
    time.sleep(0.3)
    assert resets["watchdog"] > 5  # every 16 ms, the bootloader never gets far
    # An external reset does not clear WDRF: the loop goes on.
    port.dtr = False
    port.dtr = True
    before = resets["watchdog"]
    time.sleep(0.1)
    assert resets["watchdog"] > before + 2
    # Taking the power away does.
    port.sim.power_cycle()
    time.sleep(0.05)
    before = resets["watchdog"]
    time.sleep(0.1)
    assert resets["watchdog"] == before
    assert ask(port, "01", 1).body[:2] == b"\x01\x00"


# ---------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("fault", "check"),
    [
        ("badsum:2", lambda m: m is not None and not m.checksum_ok),
        ("badseq:2", lambda m: m is not None and m.seq == 3),
        ("failed:2", lambda m: m is not None and m.body == b"\x01\xc0"),
        ("silent:2", lambda m: m is None),
        ("cksumerr:2", lambda m: m is None),
    ],
)
def test_answer_faults(board, fault, check):
    port = board("fault=" + fault)
    assert ask(port, "01", 1).body[:2] == b"\x01\x00"
    port.write(frame(2, b"\x01"))
    assert check(read_message(port, 0.3))
    assert ask(port, "01", 3).body[:2] == b"\x01\x00"


def test_v1_faults_are_refused():
    with pytest.raises(ValueError, match="unknown fault"):
        open_sim_port("sim://stk500v2?fault=nosync:1", 115200)
