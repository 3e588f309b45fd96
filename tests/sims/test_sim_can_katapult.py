"""The simulated Katapult and Klipper CAN nodes, driven with raw frames from the fact
sheet over a python-can virtual bus."""

from __future__ import annotations

import struct
import time

import pytest
from katapult_can_helpers import (
    BLOCK_ACK_2000,
    CANBUS_ID_REPLY,
    COMMAND_ERROR,
    COMPLETE,
    COMPLETE_ACK,
    CONNECT,
    CONNECT_REPLY,
    EOF_16_PAGES,
    GET_CANBUS_ID,
    NACK,
    PRIME,
    REQUEST_2000,
    SEND_EOF,
    open_bus,
    wait_for,
)

from flashsh.protocols import katapult_frame as kf
from flashsh.sims.can_bus import frame_time, start_sim_can


@pytest.fixture
def sim():
    opened = []

    def make(query: str = "node=katapult:aabbccddeeff"):
        handle, host = open_bus(query)
        opened.append((handle, host))
        return handle, host

    yield make
    for handle, host in opened:
        host.close()
        handle.stop()
        assert not handle.sim.clock.errors


def block(address: int, data: bytes) -> str:
    return kf.build(kf.SEND_BLOCK, struct.pack("<I", address) + data).hex(" ")


def request(address: int) -> str:
    return kf.build(kf.REQUEST_BLOCK, struct.pack("<I", address)).hex(" ")


def connected(sim, query: str = "node=katapult:aabbccddeeff"):
    handle, host = sim(query)
    host.frame(0x3F0, "12")
    host.assign()
    return handle, host


# ---------------------------------------------------------------------- admin layer


def test_query_lists_katapult_and_unassigned_klipper(sim):
    _, host = sim("node=katapult:aabbccddeeff&node=klipper:112233445566")
    replies = host.query()
    assert sorted(replies) == sorted(["20 aa bb cc dd ee ff 11", "20 11 22 33 44 55 66 01"])


def test_assigned_katapult_node_stops_answering_until_cleared(sim):
    handle, host = connected(sim)
    assert handle.nodes[0].node_id == 0x81
    assert host.query(first=0.3) == []
    host.frame(0x3F0, "12")
    assert host.query() == ["20 aa bb cc dd ee ff 11"]


def test_set_id_shorter_than_8_bytes_is_ignored(sim):
    handle, host = sim()
    host.frame(0x3F0, "11 aa bb cc dd ee ff")
    time.sleep(0.05)
    assert handle.nodes[0].node_id is None


def test_klipper_takes_its_own_set_id_and_ignores_katapults(sim):
    handle, host = sim("node=klipper:112233445566")
    host.frame(0x3F0, "11 11 22 33 44 55 66 81")
    host.frame(0x3F0, "12")
    assert host.query() == ["20 11 22 33 44 55 66 01"]
    host.frame(0x3F0, "01 11 22 33 44 55 66 04")
    assert wait_for(lambda: handle.nodes[0].node_id == 4)
    assert host.query(first=0.3) == []


def test_request_bootloader_reboots_klipper_into_katapult(sim):
    handle, host = sim("node=klipper:112233445566&node=katapult:aabbccddeeff")
    node = handle.node("112233445566")
    host.frame(0x3F0, "01 11 22 33 44 55 66 04")
    assert wait_for(lambda: node.node_id == 4)
    host.frame(0x3F0, "02 11 22 33 44 55 66")  # honoured although the node has an id
    assert wait_for(lambda: node.state == "bootloader")
    assert node.node_id is None
    assert sorted(host.query()) == sorted(["20 11 22 33 44 55 66 11", "20 aa bb cc dd ee ff 11"])


def test_katapult_ignores_request_bootloader_and_klipper_set_id(sim):
    handle, host = sim()
    host.frame(0x3F0, "02 aa bb cc dd ee ff")
    host.frame(0x3F0, "01 aa bb cc dd ee ff 04")
    time.sleep(0.05)
    assert handle.nodes[0].node_id is None
    assert handle.nodes[0].node.resets == 1


def test_set_id_for_another_uuid_with_our_id_drops_it(sim):
    handle, host = connected(sim)
    host.frame(0x3F0, "11 01 02 03 04 05 06 81")
    assert wait_for(lambda: handle.nodes[0].node_id is None)
    assert handle.nodes[0].logged("conflict")


def test_frame_on_our_transmit_id_drops_the_id(sim):
    handle, host = connected(sim)
    host.frame(0x203, "00")
    assert wait_for(lambda: handle.nodes[0].node_id is None)
    assert host.command(CONNECT, first=0.3) == ""


# ---------------------------------------------------------------------- commands


def test_connect_reply_is_the_fact_sheet_frame(sim):
    _, host = connected(sim)
    assert host.command(CONNECT) == CONNECT_REPLY


def test_connect_protocol_100_has_no_separator_or_version(sim):
    _, host = connected(sim, "node=katapult:aabbccddeeff,protocol=1.0.0,mcu=stm32g0b1xx")
    got = bytes.fromhex(host.command(CONNECT))
    # out[6 + mcuwords] before katapult commit 4a1532e: 7 payload words here.
    assert got[:4] == bytes.fromhex("01 88 a0 07")
    assert got[8:20] == bytes.fromhex("00 00 01 00 00 20 00 08 40 00 00 00")
    assert got[20:32] == b"stm32g0b1xx\x00"
    assert len(got) == 36 and got[-2:] == b"\x99\x03"


def test_connect_too_long_for_the_can_transmit_buffer_is_dropped(sim):
    handle, host = connected(sim, "node=katapult:aabbccddeeff,version=" + "v" * 60)
    assert host.command(CONNECT, first=0.3) == ""
    assert handle.nodes[0].logged("does not fit")


def test_get_canbus_id_and_unknown_command(sim):
    _, host = connected(sim)
    assert host.command(GET_CANBUS_ID) == CANBUS_ID_REPLY
    assert host.command(PRIME) == COMMAND_ERROR


def test_send_block_ack_resend_and_read_back(sim):
    handle, host = connected(sim)
    data = bytes(range(64))
    assert host.command(block(0x08002000, data)) == BLOCK_ACK_2000
    assert host.command(block(0x08002000, data)) == BLOCK_ACK_2000  # retransmission
    reply = host.command(REQUEST_2000)
    assert reply.startswith("01 88 a0 12 14 00 00 00 00 20 00 08 " + data.hex(" "))
    assert handle.nodes[0].flash[0x2000:0x2040] == data


def test_send_block_rules(sim):
    _, host = connected(sim)
    ones = bytes([0x11] * 64)
    assert host.command(block(0x08002000, ones)) == BLOCK_ACK_2000
    assert host.command(block(0x08001FC0, ones)) == COMMAND_ERROR  # below app start
    assert host.command(block(0x08002020, ones)) == COMMAND_ERROR  # not aligned
    short = kf.build(kf.SEND_BLOCK, struct.pack("<I", 0x08002040) + ones[:32]).hex(" ")
    assert host.command(short) == COMMAND_ERROR  # wrong length
    # Out of order: a non-first block over programmed flash with other data.
    assert host.command(block(0x08002040, ones)).startswith("01 88 a0 02 12")
    assert host.command(block(0x08002040, bytes(64))) == COMMAND_ERROR


def test_page_first_block_erases_the_page(sim):
    handle, host = connected(sim)
    for i in range(3):
        host.command(block(0x08002000 + 64 * i, bytes([i + 1]) * 64))
    assert host.command(block(0x08002000, bytes([9]) * 64)) == BLOCK_ACK_2000
    node = handle.nodes[0]
    assert node.flash[0x2000:0x2040] == bytes([9]) * 64
    assert node.flash[0x2040:0x2400] == b"\xff" * (0x400 - 0x40)  # 1 KiB page erased
    assert node.node.memory.erases == [0x08002000]


def test_eof_counts_pages_started(sim):
    _, host = connected(sim)
    for page in range(16):
        host.command(block(0x08002000 + 1024 * page, bytes([page]) * 64), quiet=0.02)
    assert host.command(SEND_EOF) == EOF_16_PAGES


def test_request_block_has_no_range_check(sim):
    _, host = connected(sim)
    inside_bootloader = bytes.fromhex(host.command(request(0x08000000)))
    assert inside_bootloader[12:20] == b"Katapult"
    outside = bytes.fromhex(host.command(request(0x20000000)))
    assert outside[12:76] == b"\xff" * 64


def test_complete_starts_the_application_after_100_ms(sim):
    handle, host = connected(sim, "node=katapult:aabbccddeeff&node=klipper:112233445566")
    node = handle.node("aabbccddeeff")
    host.command(block(0x08002000, struct.pack("<II", 0x20005000, 0x08002101) + bytes(56)))
    sent = time.monotonic()
    assert host.command(COMPLETE) == COMPLETE_ACK
    assert wait_for(lambda: node.state == "application")
    assert time.monotonic() - sent >= 0.09
    assert node.node_id is None
    assert sorted(host.query()) == sorted(["20 aa bb cc dd ee ff 01", "20 11 22 33 44 55 66 01"])


def test_complete_without_application_locks_up(sim):
    handle, host = connected(sim)
    assert host.command(COMPLETE) == COMPLETE_ACK
    assert wait_for(lambda: handle.nodes[0].state == "lockup")
    assert host.query(first=0.3) == []


def test_silent_application_says_nothing(sim):
    handle, host = sim("node=klipper:112233445566,app=silent")
    assert handle.nodes[0].state == "application"
    assert host.query(first=0.3) == []


# ---------------------------------------------------------------------- parser


def test_garbage_gets_one_nack_then_resync(sim):
    _, host = connected(sim)
    host.stream(0x202, "55 55 55 55 55 55 55 55 66 66 66 66 66 66 66 66")
    assert host.reply() == NACK
    assert host.command(CONNECT) == CONNECT_REPLY


def test_bad_crc_then_good_frame_recovers_by_default(sim):
    _, host = connected(sim)
    host.stream(0x202, "01 88 11 00 00 00 99 03")
    assert host.reply() == NACK
    assert host.command(CONNECT) == CONNECT_REPLY


def test_stall_option_leaves_the_node_deaf_after_a_bad_crc(sim):
    _, host = connected(sim, "node=katapult:aabbccddeeff,stall=1")
    host.stream(0x202, "01 88 11 00 00 00 99 03")
    assert host.reply() == NACK
    assert host.command(CONNECT, first=0.3) == ""
    assert host.command(CONNECT, first=0.3) == ""


# ---------------------------------------------------------------------- faults


def test_fault_drop_loses_a_piece_of_the_command(sim):
    handle, host = connected(sim, "node=katapult:aabbccddeeff,fault=drop:2")
    host.stream(0x202, block(0x08002000, bytes(64)))
    assert host.reply(first=0.3) in ("", NACK)
    assert handle.nodes[0].logged("data frame 2 lost")
    assert handle.nodes[0].flash[0x2000:0x2040] == b"\xff" * 64


def test_fault_dup_corrupts_the_stream_into_a_nack(sim):
    handle, host = connected(sim, "node=katapult:aabbccddeeff,fault=dup:2")
    assert host.command(block(0x08002000, bytes(64))) == NACK
    assert handle.nodes[0].flash[0x2000:0x2040] == b"\xff" * 64
    assert host.command(CONNECT) == CONNECT_REPLY


def test_fault_dup_of_a_whole_frame_runs_it_twice(sim):
    _, host = connected(sim, "node=katapult:aabbccddeeff,fault=dup:1")
    assert host.command(CONNECT) == CONNECT_REPLY + " " + CONNECT_REPLY


def test_fault_respdrop_loses_the_last_piece(sim):
    _, host = connected(sim, "node=katapult:aabbccddeeff,fault=respdrop:1")
    assert host.command(CONNECT) == CONNECT_REPLY[: 40 * 3 - 1]
    assert host.command(CONNECT) == CONNECT_REPLY


def test_fault_respdup_sends_the_response_twice(sim):
    _, host = connected(sim, "node=katapult:aabbccddeeff&fault=respdup:1")
    assert host.command(GET_CANBUS_ID) == CANBUS_ID_REPLY + " " + CANBUS_ID_REPLY


def test_fault_crc_corrupts_the_response_crc(sim):
    _, host = connected(sim, "node=katapult:aabbccddeeff,fault=crc:1")
    got = host.command(GET_CANBUS_ID)
    assert got != CANBUS_ID_REPLY
    assert got.replace("02 82", "fd 7d") == CANBUS_ID_REPLY


def test_fault_nack_and_busy(sim):
    handle, host = connected(sim, "node=katapult:aabbccddeeff,fault=nack:1,fault=busy:2")
    assert host.command(block(0x08002000, bytes(64))) == NACK
    assert handle.nodes[0].flash[0x2000:0x2040] == b"\xff" * 64  # not carried out
    assert host.command(CONNECT) == "01 88 f3 00 d8 a6 99 03"
    assert host.command(CONNECT) == CONNECT_REPLY


def test_fault_silent_node_never_answers(sim):
    handle, host = connected(sim, "node=katapult:aabbccddeeff,fault=silent")
    assert host.command(CONNECT, first=0.3) == ""
    host.frame(0x3F0, "12")
    assert host.query(first=0.3) == []


def test_fault_reboot_after_a_block(sim):
    handle, host = connected(sim, "node=katapult:aabbccddeeff,fault=reboot:2")
    node = handle.nodes[0]
    assert host.command(block(0x08002000, bytes(64))) == BLOCK_ACK_2000
    assert host.command(block(0x08002040, bytes([7]) * 64), first=0.3) == ""
    assert node.flash[0x2040:0x2080] == bytes([7]) * 64  # written before the reset
    assert node.node_id is None and node.state == "bootloader"  # first word is 0
    assert host.query() == ["20 aa bb cc dd ee ff 11"]
    host.assign()
    assert host.command(block(0x08002040, bytes([7]) * 64)).startswith("01 88 a0 02 12")


def test_fault_reboot_with_valid_application_boots_it(sim):
    handle, host = connected(sim, "node=katapult:aabbccddeeff,fault=reboot:1")
    vector = struct.pack("<II", 0x20005000, 0x08002101) + bytes(56)
    assert host.command(block(0x08002000, vector), first=0.3) == ""
    assert wait_for(lambda: handle.nodes[0].state == "application")
    assert host.query() == ["20 aa bb cc dd ee ff 01"]


def test_fault_baduuid(sim):
    _, host = connected(sim, "node=katapult:aabbccddeeff,fault=baduuid")
    assert host.command(GET_CANBUS_ID).startswith("01 88 a0 03 16 00 00 00 aa bb cc dd ee 00")


def test_fault_collide_sends_the_node_bus_off(sim):
    handle, host = sim("node=katapult:aabbccddeeff,fault=collide&node=klipper:112233445566")
    assert host.query() == ["20 11 22 33 44 55 66 01"]
    assert handle.node("aabbccddeeff").bus_off
    host.frame(0x3F0, "12")
    host.assign()
    assert host.command(CONNECT, first=0.3) == ""


def test_collide_alone_on_the_bus_answers(sim):
    handle, host = sim("node=katapult:aabbccddeeff,fault=collide")
    assert host.query() == ["20 aa bb cc dd ee ff 11"]
    assert not handle.nodes[0].bus_off


# ---------------------------------------------------------------------- timing and options


def test_frame_time_formula():
    assert frame_time(8, 1_000_000) == pytest.approx(135e-6)
    assert frame_time(0, 500_000) == pytest.approx((47 + 8) / 500_000)


def test_bus_time_bounds_a_slow_bus(sim):
    # At 10 kbit/s: 1 frame of CONNECT, 6 of its reply, 135 bits each at most.
    _, host = connected(sim, "node=katapult:aabbccddeeff&bitrate=10000&throttle=1")
    start = time.monotonic()
    assert host.command(CONNECT) == CONNECT_REPLY
    minimum = frame_time(8, 10_000) + 5 * frame_time(8, 10_000) + frame_time(8, 10_000)
    assert time.monotonic() - start >= minimum * 0.99


@pytest.mark.parametrize(
    "query, message",
    [
        ("", "at least one node"),
        ("node=stm32:aabbccddeeff", "KIND:UUID"),
        ("node=katapult:aabbcc", "12 hex digits"),
        ("node=katapult:aabbccddeeff,speed=3", "unknown node option 'speed'"),
        ("node=katapult:aabbccddeeff&bitrte=5", "unknown option 'bitrte'"),
        ("node=katapult:aabbccddeeff&fault=melt:3", "unknown fault"),
        ("node=katapult:aabbccddeeff&mcu=atmega328p", "unknown mcu"),
        ("node=katapult:aabbccddeeff&protocol=2.0.0", "protocol"),
    ],
)
def test_bad_options_are_rejected(query, message):
    with pytest.raises(ValueError, match=message):
        start_sim_can("sim://can?" + query)
