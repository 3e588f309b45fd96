"""The STM32 ROM's USART framing against crafted byte streams.

A scripted link answers each write with the next reply a test lists, so every frame the
host sends can be compared byte for byte with the examples of the fact sheet
(stm32-rom-uart.md §4-§5), and every NACK, silence and stray byte can be staged.
"""

from __future__ import annotations

import pytest
from inboxlink import InboxLink

from flashsh.errors import NoAnswerError, ProtocolError
from flashsh.protocols.stm32_wire import (
    ACK,
    NACK,
    Nack,
    RomLink,
    address_block,
    checksum,
    with_checksum,
    with_complement,
)

A, N = bytes([ACK]), bytes([NACK])


class ScriptedLink(InboxLink):
    """Each write queues the next scripted reply; reads never wait (empty = timeout)."""

    description = "scripted"

    def __init__(self, *replies: bytes) -> None:
        self.replies = list(replies)
        self.sent: list[bytes] = []
        super().__init__()

    def write(self, data: bytes) -> None:
        self.sent.append(bytes(data))
        if self.replies:
            self.inbox += self.replies.pop(0)


def hexes(frames: list[bytes]) -> list[str]:
    return [frame.hex(" ").upper() for frame in frames]


def test_check_bytes_match_the_fact_sheet_examples():
    assert address_block(0x08000000).hex(" ") == "08 00 00 00 08"
    assert with_checksum(bytes.fromhex("03 DE AD BE EF")).hex(" ") == "03 de ad be ef 21"
    # A one-byte parameter takes its complement, not its XOR (which would be itself).
    assert with_complement(0xFF) == b"\xff\x00"
    assert with_complement(0x11) == b"\x11\xee"
    assert checksum(with_checksum(bytes.fromhex("00 02 00 00 00 01 00 02"))) == 0


def test_read_memory_sends_each_stage_and_expects_no_ack_after_the_data():
    data = bytes(range(256))
    link = ScriptedLink(A, A, A + data)
    assert RomLink(link).read_memory(0x08000000, 256) == data
    assert hexes(link.sent) == ["11 EE", "08 00 00 00 08", "FF 00"]
    assert not link.inbox  # nothing was left unread


def test_write_memory_frames_length_data_and_their_xor():
    link = ScriptedLink(A, A, A)
    RomLink(link).write_memory(0x08000000, bytes.fromhex("DE AD BE EF"), timeout=1.0)
    assert hexes(link.sent) == ["31 CE", "08 00 00 00 08", "03 DE AD BE EF 21"]


def test_erase_and_extended_erase_page_lists_as_in_the_fact_sheet():
    link = ScriptedLink(A, A)
    RomLink(link).erase_pages([0, 1, 2], extended=False, timeout=1.0)
    assert hexes(link.sent) == ["43 BC", "02 00 01 02 01"]
    link = ScriptedLink(A, A)
    RomLink(link).erase_pages([0, 1, 2], extended=True, timeout=1.0)
    assert hexes(link.sent) == ["44 BB", "00 02 00 00 00 01 00 02 01"]


def test_mass_erase_in_both_erase_commands():
    link = ScriptedLink(A, A)
    RomLink(link).mass_erase(extended=False, timeout=1.0)
    assert hexes(link.sent) == ["43 BC", "FF 00"]
    link = ScriptedLink(A, A)
    RomLink(link).mass_erase(extended=True, timeout=1.0)
    assert hexes(link.sent) == ["44 BB", "FF FF 00"]


def test_go_write_protect_and_the_two_ack_commands():
    link = ScriptedLink(A, A)
    RomLink(link).go(0x08000000)
    assert hexes(link.sent) == ["21 DE", "08 00 00 00 08"]
    link = ScriptedLink(A, A)
    RomLink(link).write_protect([0, 1], timeout=1.0)
    assert hexes(link.sent) == ["63 9C", "01 00 01 00"]
    for code, pair in ((0x73, "73 8C"), (0x82, "82 7D"), (0x92, "92 6D")):
        link = ScriptedLink(A + A)
        RomLink(link).two_ack_command(code, timeout=1.0)
        assert hexes(link.sent) == [pair]


@pytest.mark.parametrize(
    ("replies", "stage", "frames"),
    [
        ((N,), "command", 1),  # read-out protection: refused straight away
        ((A, N), "address", 2),  # address outside what the ROM reads
        ((A, A, N), "length", 3),
    ],
)
def test_a_nack_stops_the_command_at_its_stage(replies, stage, frames):
    link = ScriptedLink(*replies)
    with pytest.raises(Nack) as err:
        RomLink(link).read_memory(0x20000000, 16)
    assert err.value.stage == stage and err.value.code == 0x11
    assert len(link.sent) == frames  # nothing is sent after the NACK
    assert "Read Memory (0x11)" in str(err.value) and "\n" not in str(err.value)


def test_silence_and_stray_bytes_are_errors_not_acks():
    with pytest.raises(NoAnswerError):
        RomLink(ScriptedLink()).command(0x00)
    with pytest.raises(ProtocolError, match="unexpected byte 0x55"):
        RomLink(ScriptedLink(b"\x55")).command(0x00)


def test_sync_on_a_fresh_rom_is_one_byte_answered_ack():
    link = ScriptedLink(A)
    assert RomLink(link).sync() == "ack"
    assert link.sent == [b"\x7f"]


def test_sync_on_a_rom_an_earlier_run_synchronised():
    # The first 0x7F is taken as half a command (no answer); 7F 7F is a bad pair: NACK.
    link = ScriptedLink(b"", N)
    assert RomLink(link).sync(timeout=0.01) == "nack"
    assert link.sent == [b"\x7f", b"\x7f"]


def test_sync_gives_up_on_silence_and_on_strangers():
    link = ScriptedLink()
    assert RomLink(link).sync(attempts=2, timeout=0.01) is None
    assert link.sent == [b"\x7f", b"\x7f"]
    talker = ScriptedLink(b"hello")
    assert RomLink(talker).sync(attempts=2, timeout=0.01) is None
    assert talker.sent == [b"\x7f"]  # an application talks back: no second byte


def test_get_reads_the_version_and_the_command_list():
    reply = bytes.fromhex("79 0B 22 00 01 02 11 21 31 43 63 73 82 92 79")
    link = ScriptedLink(reply)
    version, commands = RomLink(link).get()
    assert version == 0x22
    assert commands == (0x00, 0x01, 0x02, 0x11, 0x21, 0x31, 0x43, 0x63, 0x73, 0x82, 0x92)
    assert hexes(link.sent) == ["00 FF"]


def test_get_version_skips_the_stm32l412_extra_ack():
    assert RomLink(ScriptedLink(bytes.fromhex("79 22 00 00 79"))).get_version() == (
        0x22,
        b"\x00\x00",
    )
    quirky = ScriptedLink(bytes.fromhex("79 79 31 00 00 79"))
    assert RomLink(quirky).get_version() == (0x31, b"\x00\x00")
    assert not quirky.inbox


def test_get_id_reads_n_plus_one_bytes():
    assert RomLink(ScriptedLink(bytes.fromhex("79 01 04 10 79"))).get_id() == b"\x04\x10"
    longer = ScriptedLink(bytes.fromhex("79 02 04 10 AA 79"))
    assert RomLink(longer).get_id() == b"\x04\x10\xaa"
    assert not longer.inbox


def test_transfers_above_256_bytes_are_refused_before_sending():
    link = ScriptedLink()
    with pytest.raises(ValueError):
        RomLink(link).write_memory(0x08000000, bytes(260), timeout=1.0)
    with pytest.raises(ValueError):
        RomLink(link).read_memory(0x08000000, 0)
    assert link.sent == []
