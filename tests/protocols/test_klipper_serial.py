"""Klipper's serial protocol: the host's probe and requests against the firmware simulator.

Literal bytes come from Klipper itself (docs/Protocol.md, and blocks built by
klippy/msgproto.py), and CRCs are checked against a bitwise CRC written here from the
algorithm's parameters, not against the code under test.
"""

from __future__ import annotations

import json
import time
import zlib

import pytest

from flashsh.errors import TransportError
from flashsh.protocols.klipper import (
    KlipperIdentity,
    probe_klipper,
    request_serial_bootloader,
    touch_1200,
)
from flashsh.protocols.klipper_wire import (
    BlockReader,
    decode_vlq,
    encode_block,
    encode_identify,
    encode_vlq,
    parse_identify_response,
)
from flashsh.sims.klipper_serial import KlipperSerialApp
from flashsh.transports.base import ByteLink

#: identify offset=0 count=40 with sequence 0, as klippy/msgproto.py encodes it.
IDENTIFY_0_40 = bytes.fromhex("08 10 01 00 28 5e 9f 7e")
#: Empty blocks (ack/nak) naming sequence 0 and 1.
EMPTY_SEQ0 = bytes.fromhex("05 10 9e 81 7e")
EMPTY_SEQ1 = bytes.fromhex("05 11 8f 08 7e")
MAGIC = bytes.fromhex("7e 20 1c 20") + b"Request Serial Bootloader!!" + bytes.fromhex("20 7e")
KATAPULT_NACK = bytes.fromhex("01 88 f1 00 68 95 99 03")


def bitwise_crc(data: bytes) -> int:
    """CRC-16/MCRF4XX from its parameters: reflected poly 0x1021 (0x8408), init 0xFFFF."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc


class FakeLink(ByteLink):
    """Bytes written go to ``answer``; what it returns is read back at once. Reads of
    more than is there wait out their timeout, as a real port does."""

    description = "fake"

    def __init__(self, answer=None, *, modem_lines: bool = True) -> None:
        self.answer = answer or (lambda data: b"")
        self.inbox = bytearray()
        self.sent = bytearray()
        self.events: list[tuple[str, object]] = []
        self.modem_lines = modem_lines
        self._baud = 250000

    def write(self, data: bytes) -> None:
        self.sent += data
        self.inbox += self.answer(bytes(data))

    def read(self, size: int, timeout: float) -> bytes:
        if len(self.inbox) < size:
            time.sleep(timeout)
        data = bytes(self.inbox[:size])
        del self.inbox[:size]
        return self.remember(data)

    def discard_input(self) -> None:
        self.inbox.clear()

    @property
    def baudrate(self) -> int:
        return self._baud

    @baudrate.setter
    def baudrate(self, value: int) -> None:
        self.events.append(("baud", value))
        self._baud = value

    def set_lines(self, *, dtr: bool | None = None, rts: bool | None = None) -> bool:
        if not self.modem_lines:
            return False
        self.events.append(("dtr", dtr))
        return True

    def close(self) -> None:
        pass


def klipper(**options) -> tuple[KlipperSerialApp, list[int]]:
    requests: list[int] = []
    app = KlipperSerialApp("stm32f103xe", lambda: requests.append(1), **options)
    return app, requests


def blocks(data: bytes) -> list[tuple[int, bytes]]:
    reader = BlockReader()
    reader.feed(data)
    found = []
    while (block := reader.next_block()) is not None:
        found.append((block.seq, block.content))
    return found


# ---------------------------------------------------------------------- wire format


def test_crc_is_mcrf4xx_and_goes_big_endian():
    assert bitwise_crc(b"123456789") == 0x6F91  # the catalogue's check value
    assert bitwise_crc(IDENTIFY_0_40[:5]) == 0x5E9F
    assert bitwise_crc(EMPTY_SEQ0[:2]) == 0x9E81
    assert encode_block(0, encode_identify(0, 40)) == IDENTIFY_0_40
    assert encode_block(0, b"") == EMPTY_SEQ0
    assert encode_block(17, b"") == EMPTY_SEQ1  # the sequence number is 4 bits


def test_blocks_over_64_bytes_are_refused():
    assert len(encode_block(0, bytes(59))) == 64
    with pytest.raises(ValueError):
        encode_block(0, bytes(60))


@pytest.mark.parametrize(
    ("value", "wire"),
    [(0, "00"), (95, "5f"), (-1, "7f"), (-32, "60"), (96, "80 60"), (-33, "ff 5f"),
     (12288, "80 e0 00"), (-4097, "ff df 7f"), (2**31 - 1, "87 ff ff ff 7f"),
     (-(2**31), "f8 80 80 80 00"), (2**32 - 1, "8f ff ff ff 7f")],
)  # fmt: skip
def test_vlq_bytes(value, wire):
    assert encode_vlq(value).hex(" ") == wire
    assert decode_vlq(bytes.fromhex(wire), signed=value < 2**31) == (value, len(encode_vlq(value)))


def test_vlq_sizes_follow_the_protocol_table():
    # docs/Protocol.md "Variable Length Quantities": the first and last value of each size.
    table = [(-32, 95, 1), (-4096, 12287, 2), (-524288, 1572863, 3),
             (-67108864, 201326591, 4), (-2147483648, 4294967295, 5)]  # fmt: skip
    for low, high, size in table:
        assert len(encode_vlq(low)) == len(encode_vlq(high)) == size
        if size < 5:
            assert len(encode_vlq(low - 1)) == len(encode_vlq(high + 1)) == size + 1
    with pytest.raises(ValueError):
        encode_vlq(2**32)


def test_reader_skips_noise_through_the_next_sync_byte():
    data = KATAPULT_NACK + b"\x7e" + EMPTY_SEQ1 + b"\x05\x10\x00\x00\x7e" + EMPTY_SEQ0
    assert blocks(data) == [(1, b""), (0, b"")]


# ---------------------------------------------------------------------- firmware simulator


def test_identify_answers_the_first_slice_of_a_real_shaped_dictionary():
    app, _ = klipper()
    reply = blocks(app.feed(b"\x7e" + IDENTIFY_0_40))
    # The response, then the ack, both naming the next sequence number.
    assert [seq for seq, _ in reply] == [1, 1]
    assert reply[1][1] == b""
    offset, data = parse_identify_response(reply[0][1])
    assert (offset, data) == (0, app.dictionary[:40])
    text = zlib.decompress(app.dictionary)
    info = json.loads(text)
    assert text.startswith(b'{"app":"Klipper",')  # compact, sorted keys
    assert info["config"]["MCU"] == "stm32f103xe"
    assert info["commands"]["identify offset=%u count=%c"] == 1
    assert info["responses"]["identify_response offset=%u data=%.*s"] == 0


def test_identify_past_the_end_answers_no_data():
    app, _ = klipper()
    size = len(app.dictionary)
    reply = blocks(app.feed(encode_block(0, encode_identify(size - 3, 40))))
    assert parse_identify_response(reply[0][1]) == (size - 3, app.dictionary[-3:])
    reply = blocks(app.feed(encode_block(1, encode_identify(size, 40))))
    assert parse_identify_response(reply[0][1]) == (size, b"")


def test_a_slice_too_big_for_one_block_is_dropped_but_acked():
    # src/command.c command_encodef: the data must end within a 64-byte block, so the
    # most is 56 bytes after a one-byte offset and 55 after a two-byte one.
    app, _ = klipper()
    assert app.feed(encode_block(0, encode_identify(0, 57))) == EMPTY_SEQ1
    reply = blocks(app.feed(encode_block(1, encode_identify(0, 56))))
    assert len(parse_identify_response(reply[0][1])[1]) == 56
    assert blocks(app.feed(encode_block(2, encode_identify(100, 56)))) == [(3, b"")]
    reply = blocks(app.feed(encode_block(3, encode_identify(100, 55))))
    assert parse_identify_response(reply[0][1]) == (100, app.dictionary[100:155])


def test_bad_crc_gets_one_nak_until_a_good_block():
    app, _ = klipper()
    bad = bytearray(IDENTIFY_0_40)
    bad[-2] ^= 0xFF
    assert app.feed(bytes(bad)) == EMPTY_SEQ0
    assert app.feed(bytes(bad)) == b""  # still waiting for a good block: no second nak
    assert blocks(app.feed(IDENTIFY_0_40))[-1] == (1, b"")
    assert app.feed(bytes(bad)) == EMPTY_SEQ1


def test_leading_sync_bytes_are_not_nakked():
    app, _ = klipper()
    assert app.feed(b"\x7e\x7e\x7e\x7e\x7e\x7e") == b""


def test_wrong_sequence_is_nakked_with_the_expected_one():
    app, _ = klipper()
    app.feed(IDENTIFY_0_40)
    assert app.feed(encode_block(5, encode_identify(0, 40))) == EMPTY_SEQ1


def test_unknown_command_shuts_down_and_the_replayed_block_is_nakked():
    app, _ = klipper()
    reply = blocks(app.feed(encode_block(0, encode_vlq(60))))
    # "shutdown clock=0 static_string_id=3", then the nak for the block found again.
    assert reply == [(1, bytes([9, 0, 3])), (1, b"")]
    # identify still works while shut down.
    assert parse_identify_response(blocks(app.feed(encode_block(1, encode_identify(0, 8))))[0][1])


def test_bootloader_magic_triggers_once():
    app, requests = klipper()
    assert app.feed(MAGIC) == b""
    assert requests == [1]
    # The MCU restarted: a fresh sequence, and the old one is nakked.
    assert app.feed(encode_block(3, b"")) == EMPTY_SEQ0


def test_magic_after_noise_and_in_pieces_still_triggers():
    app, requests = klipper()
    app.feed(b"\x12\x34\x56")
    for i in range(0, len(MAGIC), 5):
        app.feed(MAGIC[i : i + 5])
    assert requests == [1]


@pytest.mark.parametrize("index", [1, 2, 3, 20, 31, 32])
def test_a_near_miss_does_not_trigger(index):
    app, requests = klipper()
    near = bytearray(MAGIC)
    near[index] ^= 0x01
    app.feed(bytes(near))
    assert requests == []


@pytest.mark.parametrize("transport", ["usb", "can"])
def test_only_uart_builds_look_for_the_magic(transport):
    app, requests = klipper(transport=transport)
    app.feed(MAGIC)
    assert requests == []
    config = json.loads(zlib.decompress(app.dictionary))["config"]
    assert ("CANBUS_FREQUENCY" in config) == (transport == "can")
    assert "SERIAL_BAUD" not in config


# ---------------------------------------------------------------------- host side


def test_probe_reads_the_identity_from_the_simulator():
    app = KlipperSerialApp("rp2040", lambda: None, version="v0.12.0-400-gabc123")
    link = FakeLink(app.feed)
    assert probe_klipper(link) == KlipperIdentity("Klipper", "v0.12.0-400-gabc123", "rp2040")
    assert link.sent.startswith(b"\x7e" + IDENTIFY_0_40)


def test_probe_follows_the_sequence_the_mcu_expects():
    app, _ = klipper()
    for seq in range(7):
        app.feed(encode_block(seq, encode_identify(0, 1)))
    link = FakeLink(app.feed)
    assert probe_klipper(link).mcu == "stm32f103xe"
    assert probe_klipper(link).mcu == "stm32f103xe"  # and again, from where it stopped


def test_probe_out_of_budget_still_names_klipper():
    app, _ = klipper()
    link = FakeLink(app.feed)
    assert probe_klipper(link, budget=0) == KlipperIdentity("Klipper", None, None)
    assert link.sent == b"\x7e" + IDENTIFY_0_40


def test_probe_on_a_silent_link_gives_up_in_time():
    link = FakeLink()
    start = time.monotonic()
    assert probe_klipper(link, timeout=0.2) is None
    assert time.monotonic() - start < 0.5


def test_probe_ignores_katapult_nacks():
    link = FakeLink(lambda data: KATAPULT_NACK)
    start = time.monotonic()
    assert probe_klipper(link, timeout=0.2) is None
    assert time.monotonic() - start < 0.5


def test_request_serial_bootloader_sends_the_33_bytes():
    link = FakeLink()
    request_serial_bootloader(link)
    assert bytes(link.sent) == MAGIC
    assert len(MAGIC) == 33


def test_request_reaches_the_simulator():
    app, requests = klipper()
    request_serial_bootloader(FakeLink(app.feed))
    assert requests == [1]


def test_touch_1200_raises_dtr_sets_the_rate_then_drops_dtr():
    link = FakeLink()
    assert touch_1200(link) is True
    assert link.events == [("dtr", True), ("baud", 1200), ("dtr", False)]


def test_touch_1200_reports_a_link_without_modem_lines():
    link = FakeLink(modem_lines=False)
    assert touch_1200(link) is False
    assert link.events == []


def test_touch_1200_reports_a_refused_rate():
    class Refusing(FakeLink):
        @FakeLink.baudrate.setter
        def baudrate(self, value: int) -> None:
            raise TransportError("no 1200 here")

    assert touch_1200(Refusing()) is False
