"""The simulated SAM-BA monitors, byte for byte: the parser and replies of samba.md §2-4,
the SAMD bootloaders' X/Y/Z and quirks, NVMCTRL and EEFC rules, G through the Thumb
interpreter, resets and booting. Every exchange is the literal bytes a host sends."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator

import pytest

from flashsh.protocols import samba_applet
from flashsh.sims.port import SimPort
from flashsh.sims.samba import SambaBoard
from flashsh.sims.url import open_sim_port

#: bossac 1.9.1's word-copy routine (shumatech/BOSSA src/WordCopyArm.cpp), 52 bytes.
BOSSAC_APPLET = bytes.fromhex(
    "09480a490a4a02e008c908c0013a002afad104480028 01d1014885467047c046".replace(" ", "")
) + bytes(20)


@pytest.fixture
def board() -> Iterator:
    ports: list[SimPort] = []

    def open_board(query: str = "") -> SimPort:
        port = open_sim_port("sim://samba?" + "&".join(filter(None, ["throttle=0", query])), 115200)
        ports.append(port)
        port.timeout = 0.3
        assert port.sim.wait_for_state("monitor"), port.sim.events
        return port

    yield open_board
    for port in ports:
        port.close()


def ask(port: SimPort, text: bytes | str, size: int = 4096, timeout: float = 0.1) -> bytes:
    """Send ``text`` and return what comes back within ``timeout``."""
    port.write(text.encode() if isinstance(text, str) else text)
    port.timeout = timeout
    return port.read(size)


def word(port: SimPort, address: int) -> int:
    return struct.unpack("<I", ask(port, f"w{address:08X},4#", 4))[0]


def send(port: SimPort, address: int, data: bytes) -> None:
    """``S`` then the payload in its own write, as bossac does on USB."""
    ask(port, f"S{address:08X},{len(data):08X}#", 0, 0.01)
    port.write(data)


# ---------------------------------------------------------------------------- parser


def test_zero_bootloader_answers_n_and_v_and_identification(board):
    port = board()
    assert ask(port, "N#") == b"\n\r"
    assert ask(port, "V#") == b"v2.0 [Arduino:XYZ] Mar 19 2018 09:45:14\n\r"
    assert word(port, 0xE000ED00) == 0x410CC601
    assert word(port, 0x41002018) == 0x10010305
    assert port.sim.usb_id == "2341:004d"


def test_address_persists_and_ff_is_ignored(board):
    port = board()
    assert ask(port, "w41002018,4#") == struct.pack("<I", 0x10010305)
    # No comma: the accumulator is not the address; the previous address is read.
    assert ask(port, "w00000000#") == struct.pack("<I", 0x10010305)
    assert ask(port, b"\xffw\xffE000ED00,\xff4#") == struct.pack("<I", 0x410CC601)
    # Lower-case digits are hex digits too; a letter A-F can never be a command.
    assert ask(port, "we000ed00,4#") == struct.pack("<I", 0x410CC601)


def test_terminal_mode_prints_hex_and_prompts(board):
    port = board()
    assert ask(port, "T#") == b"\n\r>"
    assert ask(port, "w00000000,#") == b"\n\r0x20007FFC\n\r>"
    assert ask(port, "o00000004,#") == b"\n\r0xD1\n\r>"
    assert ask(port, "N#") == b"\n\r"  # the '#' echo; no prompt: the mode is off
    assert ask(port, "w00000000,#") == struct.pack("<I", 0x20007FFC)


def test_xyzp_build_reports_its_tag_and_hides_flash_when_secured(board):
    port = board("tag=XYZP&security=1")
    assert b"[Arduino:XYZP]" in ask(port, "V#")
    assert ask(port, "w00002000,4#") == bytes(4)
    assert ask(port, "o00002000,4#") == b"\x04"  # 'o' sends current_number's low byte
    assert ask(port, "w00000000,4#") == struct.pack("<I", 0x20007FFC)  # word 0 allowed


def test_uf2_is_silent_on_n_and_ends_v_with_nul(board):
    port = board("chip=atsamd51j19a")
    assert ask(port, "N#") == b""
    assert ask(port, "T#") == b""
    assert ask(port, "V#") == b"v1.1 [Arduino:XYZ] Jun 16 2020 16:21:41\n\r\0"
    assert word(port, 0x00000004) & 0xFFF00000 != 0x00800000  # not a SAM4 ROM
    assert port.sim.usb_id == "239a:0021"


def test_uf2_skips_the_rest_of_a_packet_after_ff(board):
    port = board("chip=atsamd51j19a")
    assert ask(port, b"\xffw00000000,4#") == b""
    assert ask(port, b"w00000000,4#") == struct.pack("<I", 0x20030000)


def test_rom_answers_and_shows_itself_at_zero(board):
    port = board("chip=at91sam3x8e")
    assert ask(port, "N#") == b"\n\r"
    assert ask(port, "V#") == b"v1.1 Dec 15 2010 19:25:04\n\r"
    assert word(port, 0x400E0740) == 0
    assert word(port, 0x400E0940) == 0x285E0A60
    assert word(port, 0x00000004) == word(port, 0x00100004)
    assert port.sim.usb_id == "03eb:6124"


def test_uart_link_has_no_usb_id_and_uf2_has_no_uart():
    assert SambaBoard({"link": ["uart"]}).usb_id is None
    with pytest.raises(ValueError, match="USE_UART"):
        SambaBoard({"chip": ["atsamd51j19a"], "link": ["uart"]})
    with pytest.raises(ValueError, match="unknown option"):
        SambaBoard({"chipp": ["x"]})


# ---------------------------------------------------------------------------- X Y Z


def test_z_is_crc16_xmodem_printed_as_eight_digits(board):
    port = board()
    assert ask(port, "Z00040000,40#".replace("00040000", "0003FFC0")) == b"Z0000278E#\n\r"
    send(port, 0x20004100, b"123456789")
    assert ask(port, "Z20004100,9#") == b"Z000031C3#\n\r"


def test_y_programs_without_erasing_and_x_spares_bootprot(board):
    port = board()
    boot = port.sim.monitor_code
    send(port, 0x20004034, bytes([0x0F]) * 256)
    assert ask(port, "Y20004034,0#") == b"Y\n\r"
    assert ask(port, "Y00002000,100#") == b"Y\n\r"
    send(port, 0x20004034, bytes([0xF1]) * 256)
    ask(port, "Y20004034,0#")
    assert ask(port, "Y00002000,100#") == b"Y\n\r"
    assert port.sim.flash[0x2000:0x2100] == bytes([0x01]) * 256  # AND, no erase
    assert ask(port, "X00000000#", 3, 2) == b"X\n\r"
    assert port.sim.flash[0x2000:] == b"\xff" * (256 * 1024 - 0x2000)
    assert port.sim.monitor_code == boot  # rows under BOOTPROT refused silently
    refused = [c for c in port.sim.chip.nvm.commands if c[2] != "ok"]
    assert len(refused) == 32 and refused[0][:2] == ("ER", 0)


def test_nvmctrl_flags_a_bootprot_violation(board):
    port = board()
    ask(port, "W4100401C,00000000#")  # ADDR: half-word address 0
    ask(port, "W41004000,0000A502#")  # ER
    assert word(port, 0x41004014) & 0x2  # INTFLAG.ERROR
    assert word(port, 0x41004018) & 0x8  # STATUS.LOCKE
    ask(port, "W41004014,00000002#")
    assert word(port, 0x41004014) == 0x1  # READY, error cleared
    assert port.sim.flash[:4] == struct.pack("<I", 0x20007FFC)


def test_bootprot_7_leaves_the_bootloader_unprotected(board):
    port = board("bootprot=7")
    ask(port, "X00000000#", 3, 2)
    assert port.sim.flash[:0x2000] == b"\xff" * 0x2000


def test_usb_r_from_flash_breaks_at_64_bytes(board):
    port = board()
    good = ask(port, "R00000000,3F#", 63)
    assert good == port.sim.flash[:63]
    bad = ask(port, "R00000000,40#", 64)
    assert len(bad) == 64 and bad != port.sim.flash[:64]
    send(port, 0x20004000, bytes(range(200)))
    assert ask(port, "R20004000,C8#", 200) == bytes(range(200))  # SRAM is fine


def test_s_payload_in_the_command_packet(board):
    port = board()
    port.write(b"S20004000,00000010#" + bytes(range(16)))
    assert ask(port, "R20004000,10#", 16) == bytes(range(16))
    sends = [t for t in port.sim.monitor.transfers if t.command == "S"]
    assert sends[-1].shared_packet and sends[-1].length == 16


def test_packet_fault_reproduces_the_firmware_bug(board):
    port = board("fault=packet")
    # 30 bytes: 20 of the command, the first 10 payload bytes in the same packet.
    payload = bytes(range(0x40, 0x60))
    port.write(b"S20004000,00000020#" + payload[:10])
    time.sleep(0.05)  # the firmware has taken that packet before the rest comes
    port.write(payload[10:])
    got = ask(port, "R20004000,20#", 32)
    assert got != payload
    assert got[:22] == payload[10:]  # the rest overwrote the start of the buffer


def test_byte_store_into_the_page_buffer_faults_the_monitor(board):
    port = board()
    assert ask(port, "O00002000,00#") == b""
    assert ask(port, "N#") == b""
    assert port.sim.state == "crashed"
    assert port.sim.usb_id == "2341:004d"  # USB stays enumerated


# ---------------------------------------------------------------------------- G, EEFC


def run_copy(port: SimPort, applet: int, dst: int, src: int, words: int, routine: str) -> None:
    if routine == "bossac":
        send(port, applet, BOSSAC_APPLET)
        for offset, value in ((0x28, dst), (0x2C, src), (0x30, words)):
            ask(port, f"W{applet + offset:08X},{value:08X}#", 0, 0.01)
        ask(port, f"W{applet + 0x20:08X},20010000#", 0, 0.01)
        ask(port, f"W{applet + 0x24:08X},{applet + 1:08X}#", 0, 0.01)
        ask(port, f"G{applet + 0x20:08X}#", 0, 0.05)
    else:
        send(port, applet, samba_applet.image(applet, 0x20010000))
        send(port, applet + samba_applet.PARAMS, struct.pack("<III", dst, src, words))
        ask(port, f"G{applet + samba_applet.VECTOR:08X}#", 0, 0.05)


@pytest.mark.parametrize("routine", ["bossac", "flashsh"])
def test_copy_routine_fills_the_eefc_latch_and_wp_ands(board, routine):
    port = board("chip=at91sam3x8e")
    page = bytes((i * 7) & 0xFF for i in range(256))
    send(port, 0x20002000, page)
    run_copy(port, 0x20001000, 0x000C0100, 0x20002000, 64, routine)
    ask(port, "W400E0C04,5A000101#")  # WP page 1 of plane 1
    assert (word(port, 0x400E0C08) & 7) == 1  # FRDY, no error
    assert port.sim.flash[0x40100:0x40200] == page
    send(port, 0x20002000, b"\x0f" * 256)
    run_copy(port, 0x20001000, 0x000C0100, 0x20002000, 64, routine)
    ask(port, "W400E0C04,5A000101#")
    assert port.sim.flash[0x40100:0x40200] == bytes(b & 0x0F for b in page)


def test_eefc_errors_epa_on_sam3x_and_ewp_beyond_16k_on_sam4e(board):
    sam3 = board("chip=at91sam3x8e")
    ask(sam3, "W400E0A04,5A000107#")  # EPA
    assert word(sam3, 0x400E0A08) & 2  # FCMDE
    assert word(sam3, 0x400E0A08) == 1  # error bits clear on read
    ask(sam3, "W400E0A04,12000105#")  # bad key
    assert word(sam3, 0x400E0A08) & 2
    sam4 = board("chip=atsam4e8e")
    ask(sam4, "W400E0A04,5A001F03#")  # EWP page 31: inside the first 16 KiB
    assert word(sam4, 0x400E0A08) == 1
    ask(sam4, "W400E0A04,5A002003#")  # EWP page 32
    assert word(sam4, 0x400E0A08) & 2
    ask(sam4, "W400E0A04,5A002001#")  # EPA 8 pages from page 32
    ask(sam4, "W400E0A04,5A002107#")
    assert word(sam4, 0x400E0A08) == 1


def test_lock_bits_refuse_programming_with_flocke(board):
    port = board("chip=atsam4e8e")
    ask(port, "W400E0A04,5A000008#")  # SLB region 0
    ask(port, "W400E0A04,5A00000A#")  # GLB
    assert word(port, 0x400E0A0C) == 1
    ask(port, "W400E0A04,5A000001#")
    assert word(port, 0x400E0A08) & 4  # FLOCKE


def test_gpnvm1_maps_flash_at_zero_and_rstc_boots_it(board):
    port = board("chip=at91sam3x8e")
    rom_sp = word(port, 0)
    send(port, 0x20002000, struct.pack("<II", 0x20088000, 0x000800F1) + bytes(248))
    run_copy(port, 0x20001000, 0x00080000, 0x20002000, 64, "flashsh")
    ask(port, "W400E0A04,5A000003#")
    ask(port, "W400E0A04,5A00010B#")  # SGPB 1
    ask(port, "W400E0A04,5A00000D#")  # GGPB
    assert word(port, 0x400E0A0C) == 2
    assert word(port, 0) == 0x20088000 != rom_sp
    ask(port, "W400E1A00,A500000D#")
    assert port.sim.wait_for_state("application")
    assert port.sim.booted == [(0x20088000, 0x000800F1)]
    assert port.sim.usb_id is None


def test_due_without_gpnvm1_comes_back_to_the_rom(board):
    port = board("chip=at91sam3x8e")
    ask(port, "W400E1A00,A500000D#")
    assert port.sim.wait_for_state("monitor")
    assert port.sim.booted == [] and port.sim.resets == ["power-on", "RSTC_CR"]
    assert ask(port, "N#") == b"\n\r"


def test_runaway_applet_silences_the_monitor(board):
    port = board("chip=atsam4e8e")
    send(
        port,
        0x20001000,
        bytes.fromhex("FEE7") + bytes(6) + struct.pack("<II", 0x20010000, 0x20001001),
    )
    assert ask(port, "G20001008#N#", timeout=0.5) == b""
    assert port.sim.wait_for_state("crashed", 5)
    assert ask(port, "N#") == b""


# ---------------------------------------------------------------------------- boot


def test_aircr_reset_boots_a_valid_sketch_or_comes_back(board):
    port = board()
    ask(port, "WE000ED0C,05FA0004#")
    assert port.sim.wait_for_state("monitor")  # blank sketch area: stays
    send(port, 0x20004034, struct.pack("<II", 0x20008000, 0x2101) + bytes(56))
    ask(port, "Y20004034,0#")
    ask(port, "Y00002000,40#")
    ask(port, "W20007FFC,07738135#")  # double-tap magic (Klipper's request)
    ask(port, "WE000ED0C,05FA0004#")
    assert port.sim.wait_for_state("monitor") and port.sim.booted == []
    ask(port, "WE000ED0C,05FA0004#")
    assert port.sim.wait_for_state("application")
    assert port.sim.booted == [(0x20008000, 0x2101)]
    assert ask(port, "V#") == b""


def test_image_option_loads_at_the_application_start(tmp_path):
    path = tmp_path / "app.bin"
    path.write_bytes(struct.pack("<II", 0x20030000, 0x4101) + b"app")
    board = SambaBoard({"chip": ["atsamd51j19a"], "image": [str(path)], "throttle": ["0"]})
    assert board.flash[0x4000:0x400B] == path.read_bytes()
    board.start()
    try:
        assert board.wait_for_state("application")  # power-on: no double-tap wait
    finally:
        board.stop()


# ---------------------------------------------------------------------------- UART


def xmodem_block(number: int, data: bytes, *, bad: bool = False) -> bytes:
    from flashsh.sims.samba_monitor import crc16

    data = data.ljust(128, b"\0")
    crc = crc16(data) ^ (0xFFFF if bad else 0)
    return bytes([1, number, 0xFF - number]) + data + crc.to_bytes(2, "big")


def test_uart_s_and_r_speak_xmodem_crc(board):
    port = board("link=uart")
    assert ask(port, "S20004000,00000005#", 1) == b"C"
    assert ask(port, xmodem_block(1, b"hello"), 1) == b"\x06"
    assert ask(port, b"\x04", 1) == b"\x06"
    assert ask(port, "R20004000,5#", 10, 0.05) == b""
    reply = ask(port, b"C", 133)
    assert reply == xmodem_block(1, b"hello")
    assert ask(port, b"\x06", 1) == b"\x04"
    port.write(b"\x06")
    assert port.sim.monitor.transfers[-1].link == "uart"


def test_uart_bad_block_cancels_on_arduino_and_is_naked_by_the_rom(board):
    zero = board("link=uart")
    ask(zero, "S20004000,00000005#", 1)
    assert ask(zero, xmodem_block(1, b"hello", bad=True), 1) == b"\x18"
    rom = board("chip=at91sam3x8e&link=uart")
    ask(rom, "S20002000,00000005#", 1)
    assert ask(rom, xmodem_block(1, b"hello", bad=True), 1) == b"\x15"
    assert ask(rom, xmodem_block(1, b"hello"), 1) == b"\x06"


def test_uart_g_acknowledges_on_arduino_only(board):
    zero = board("link=uart")
    ask(zero, "W20004000,00004770#")  # bx lr
    ask(zero, "W20004010,20008000#")
    ask(zero, "W20004014,20004001#")
    assert ask(zero, "G20004010#") == b"\x06"
    rom = board("chip=at91sam3x8e&link=uart")
    ask(rom, "W20001000,00004770#")
    ask(rom, "W20001010,20008000#")
    ask(rom, "W20001014,20001001#")
    assert ask(rom, "G20001010#") == b""


# ---------------------------------------------------------------------------- faults


def test_dead_board_and_hang_fault(board):
    dead = SambaBoard({"fault": ["dead"], "throttle": ["0"]}).start()
    try:
        assert dead.wait_for_state("monitor")
        port = SimPort(dead, 115200)
        port.timeout = 0.2
        port.write(b"N#")
        assert port.read(2) == b""
    finally:
        dead.stop()
    port = board("fault=hang:2")
    assert ask(port, "N#") == b"\n\r"
    assert ask(port, "V#") == b""
    assert port.sim.state == "crashed"


def test_rom_resends_an_xmodem_block_the_host_naks(board):
    port = board("chip=atsam4e8e&link=uart&fault=xcrc:1")
    ask(port, "W20001000,11223344#")
    assert ask(port, "R20001000,4#", 10, 0.05) == b""
    first = ask(port, b"C", 133)
    assert first[:3] == b"\x01\x01\xfe" and first != xmodem_block(1, bytes.fromhex("44332211"))
    assert ask(port, b"\x15", 133) == xmodem_block(1, bytes.fromhex("44332211"))
    assert ask(port, b"\x06", 1) == b"\x04"


def test_long_erase_keeps_x_from_answering(board):
    port = board("throttle=1&erase_ms=5")
    start = time.monotonic()
    assert ask(port, "X00030000#", 3, 2.0) == b"X\n\r"
    # 64 rows of 5 ms each: the reply comes only after all of them.
    assert time.monotonic() - start >= 64 * 0.005


def test_gpnvm_option_boots_flash_at_power_on(tmp_path):
    board = SambaBoard({"chip": ["at91sam3x8e"], "gpnvm": ["2"], "throttle": ["0"]}).start()
    try:
        assert board.wait_for_state("application")
        assert board.booted == [(0xFFFFFFFF, 0xFFFFFFFF)]  # blank flash: it runs nothing
        assert board.usb_id is None
    finally:
        board.stop()
