"""The SAM-BA wire byte for byte, against the fact sheet (samba.md §2-§5, §9)."""

from __future__ import annotations

import struct

import pytest

from flashsh.errors import NoAnswerError, ProtocolError
from flashsh.protocols import samba_applet as applet
from flashsh.protocols.samba_wire import (
    ACK,
    EOT,
    SambaWire,
    crc16_xmodem,
    parse_version,
    xmodem_block,
)
from tests.protocols.samba_links import ScriptedLink, load, run_thumb


def test_crc16_xmodem_check_values():
    assert crc16_xmodem(b"123456789") == 0x31C3
    assert crc16_xmodem(b"\xff" * 64) == 0x278E
    assert crc16_xmodem(b"") == 0


def test_xmodem_block_layout():
    block = xmodem_block(1, b"123456789")
    assert len(block) == 133
    assert block[:3] == bytes([0x01, 0x01, 0xFE])
    assert block[3:12] == b"123456789" and block[12:131] == bytes(119)
    assert block[131:] == struct.pack(">H", crc16_xmodem(b"123456789".ljust(128, b"\0")))
    assert xmodem_block(256, b"")[1:3] == bytes([0x00, 0xFF])  # numbers wrap


@pytest.mark.parametrize(
    ("reply", "text", "ext"),
    [
        (
            b"v2.0 [Arduino:XYZ] Mar 19 2018 09:45:14\n\r",
            "v2.0 [Arduino:XYZ] Mar 19 2018 09:45:14",
            "XYZ",
        ),
        (
            b"v1.1 [Arduino:XYZ] Jun  8 2019 12:00:00\n\r\0",
            "v1.1 [Arduino:XYZ] Jun  8 2019 12:00:00",
            "XYZ",
        ),
        (
            b"v2.0 [Arduino:XYZP] Dec 23 2020 10:00:00\n\r",
            "v2.0 [Arduino:XYZP] Dec 23 2020 10:00:00",
            "PXYZ",
        ),
        (b"v1.13 RC2 Feb 20 2013 13:25:17\n\r", "v1.13 RC2 Feb 20 2013 13:25:17", ""),
        (b"v2.0 [SparkFun] Jan 1 2017\n\r", "v2.0 [SparkFun] Jan 1 2017", ""),
    ],
)
def test_version_and_extensions(reply, text, ext):
    assert parse_version(reply) == (text, frozenset(ext))


def test_word_commands_are_exact():
    link = ScriptedLink(None, b"", b"", b"", bytes([0xD0, 0x2D, 0x00, 0x20]), b"\x34\x12", b"\xab")
    wire = SambaWire(link)
    wire.write_word(0x400E0A04, 0x5A00010B)
    wire.write_half(0x20000002, 0xCAFE)
    wire.write_byte(0x20004000, 0xAB)
    assert wire.read_word(0) == 0x20002DD0  # little-endian (samba.md §2.1)
    assert wire.read_half(0x20000002) == 0x1234
    assert wire.read_byte(0x00804001) == 0xAB
    assert link.sent == [
        b"W400E0A04,5A00010B#",
        b"H20000002,CAFE#",
        b"O20004000,AB#",
        b"w00000000,4#",  # always the comma: the monitor keeps the last address
        b"h20000002,2#",
        b"o00804001,1#",
    ]


def test_silence_is_a_no_answer_error_naming_the_command():
    wire = SambaWire(ScriptedLink(None, b"\x01\x02"))
    with pytest.raises(NoAnswerError, match=r"w 0x41002018 \(2 of 4 bytes came\)"):
        wire.read_word(0x41002018)


def test_usb_send_pauses_between_command_and_payload(monkeypatch):
    events = []
    link = ScriptedLink(lambda data: events.append(("write", data)) or b"")
    monkeypatch.setattr("time.sleep", lambda s: events.append(("sleep", s)))
    SambaWire(link, usb=True).write_memory(0x20004034, b"\x11" * 70)
    assert events[0] == ("write", b"S20004034,00000046#")
    assert events[1][0] == "sleep" and events[1][1] >= 0.001
    assert events[2] == ("write", b"\x11" * 70)


def test_samd_usb_reads_in_63_byte_pieces():
    flash = bytes(range(256)) * 2

    def answer(data: bytes) -> bytes:
        if data.startswith(b"R"):
            address, length = (int(x, 16) for x in data[1:-1].split(b","))
            return flash[address : address + length]
        return b""

    link = ScriptedLink(answer)
    wire = SambaWire(link, usb=True)
    wire.set_extensions(frozenset("XYZ"))
    assert wire.read_memory(0, 200) == flash[:200]
    assert link.sent == [
        b"R00000000,0000003F#",
        b"R0000003F,0000003F#",
        b"R0000007E,0000003F#",
        b"R000000BD,0000000B#",
    ]


def test_rom_usb_read_of_a_power_of_two_starts_with_o():
    flash = bytes(range(256))

    def answer(data: bytes) -> bytes:
        if data.startswith(b"o"):
            return flash[int(data[1:9], 16) : int(data[1:9], 16) + 1]
        if data.startswith(b"R"):
            address, length = (int(x, 16) for x in data[1:-1].split(b","))
            return flash[address : address + length]
        return b""

    link = ScriptedLink(answer)
    assert SambaWire(link, usb=True).read_memory(0x10, 64) == flash[0x10:0x50]
    assert link.sent == [b"o00000010,1#", b"R00000011,0000003F#"]


def test_xmodem_send_waits_for_c_and_ends_with_eot():
    link = ScriptedLink(None, b"C", bytes([ACK]), bytes([ACK]), bytes([ACK]))
    data = bytes(range(200))
    SambaWire(link, usb=False).write_memory(0x20001000, data)
    assert link.sent[0] == b"S20001000,000000C8#"
    assert link.sent[1] == xmodem_block(1, data[:128])
    assert link.sent[2] == xmodem_block(2, data[128:])
    assert link.sent[3] == bytes([EOT])


def test_xmodem_send_resends_a_nakked_block():
    link = ScriptedLink(None, b"C", b"\x15", bytes([ACK]), bytes([ACK]))
    SambaWire(link, usb=False).write_memory(0x20001000, b"abcd")
    assert link.sent[1] == link.sent[2] == xmodem_block(1, b"abcd")


def test_xmodem_receive_acks_blocks_and_eot():
    data = bytes(range(130))
    link = ScriptedLink(
        None, b"", xmodem_block(1, data[:128]), xmodem_block(2, data[128:]), bytes([EOT]), b""
    )
    assert SambaWire(link, usb=False).read_memory(0x80000, 130) == data
    assert link.sent == [b"R00080000,00000082#", b"C", b"\x06", b"\x06", b"\x06"]


def test_xmodem_receive_naks_a_damaged_block():
    good = xmodem_block(1, b"wxyz")
    bad = good[:5] + b"\x00" + good[6:]
    link = ScriptedLink(None, b"", bad, good, bytes([EOT]), b"")
    assert SambaWire(link, usb=False).read_memory(0x80000, 4) == b"wxyz"
    assert link.sent[1:] == [b"C", b"\x15", b"\x06", b"\x06"]


def test_arduino_extensions():
    link = ScriptedLink(None, b"X\n\r", b"Y\n\r", b"Y\n\r", b"Z0000278E#\n\r")
    wire = SambaWire(link)
    wire.erase_from(0x2000)
    wire.flash_from_buffer(0x20004000, 0x2000, 0x1000)
    assert wire.crc(0x2000, 64) == 0x278E
    assert link.sent == [
        b"X00002000#",
        b"Y20004000,0#",
        b"Y00002000,00001000#",
        b"Z00002000,00000040#",
    ]


def test_wrong_extension_reply_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="answered Z"):
        SambaWire(ScriptedLink(None, b"\n\r>")).crc(0, 4)


def test_go_consumes_the_uart_ack():
    link = ScriptedLink(None, bytes([ACK]), bytes([1, 0, 0, 0]))
    wire = SambaWire(link, usb=False)
    wire.go_ack = True
    wire.go(0x20001014)
    assert wire.read_word(0x400E0A08) == 1
    assert link.sent[0] == b"G20001014#"


def test_applet_bytes_decode_to_the_documented_routine():
    assert applet.decode() == [
        "00  4806  ldr r0, [pc, #24] -> 0x1C",
        "02  4907  ldr r1, [pc, #28] -> 0x20",
        "04  4A07  ldr r2, [pc, #28] -> 0x24",
        "06  2A00  cmp r2, #0",
        "08  D003  beq 0x12",
        "0A  C908  ldmia r1!, {r3}",
        "0C  C008  stmia r0!, {r3}",
        "0E  3A01  subs r2, #1",
        "10  D1FB  bne 0x0A",
        "12  4770  bx lr",
    ]
    image = applet.image(0x20001000, 0x20010000)
    assert len(image) == applet.PARAMS + 12
    assert struct.unpack_from("<II", image, applet.VECTOR) == (0x20010000, 0x20001001)


@pytest.mark.parametrize("words", [0, 1, 64, 128])
def test_applet_copies_words_when_run_like_g(words):
    base = 0x20001000
    memory: dict[int, int] = {}
    load(memory, base, applet.image(base, 0x20010000))
    data = bytes((i * 7) & 0xFF for i in range(words * 4))
    load(memory, base + applet.PARAMS, applet.frame(base, 0x00080000, data))
    run_thumb(memory, base + applet.VECTOR)
    copied = b"".join(struct.pack("<I", memory[0x80000 + 4 * i]) for i in range(words))
    assert copied == data
    assert 0x80000 + 4 * words not in memory  # not one word more
