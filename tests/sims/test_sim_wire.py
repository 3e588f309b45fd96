"""The UART line model: byte timing, queueing, throttle and baud mismatch."""

from __future__ import annotations

import time

import pytest

from flashsh.sims.wire import Wire, sample_frame


class FakeClock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_bytes_take_ten_bit_times_and_queue_behind_each_other():
    clock = FakeClock()
    wire = Wire(115200, 115200, clock=clock)
    wire.send(b"\x30\x20")
    due = [b.due - 100.0 for b in wire]
    assert due == pytest.approx([10 / 115200, 20 / 115200])
    # Sent later, but the line is still busy: it queues behind.
    clock.t += 5 / 115200
    wire.send(b"\x55")
    assert list(wire)[-1].due - 100.0 == pytest.approx(30 / 115200)
    assert wire.arrived() == 0
    clock.t = 100.0 + 20 / 115200
    assert wire.arrived() == 2


def test_bits_per_byte_and_throttle_scale_the_byte_time():
    clock = FakeClock()
    assert Wire(9600, 9600, bits_per_byte=11, clock=clock).byte_time == pytest.approx(11 / 9600)
    assert Wire(9600, 9600, throttle=0.5, clock=clock).byte_time == pytest.approx(5 / 9600)
    wire = Wire(9600, 9600, throttle=0, clock=clock)
    wire.send(bytes(100))
    assert wire.arrived() == 100


def test_read_waits_for_the_bytes_in_real_time():
    wire = Wire(9600, 9600)
    start = time.monotonic()
    wire.send(bytes(range(10)))  # 10 ms at 9600 baud
    assert wire.read(10, 1.0) == bytes(range(10))
    assert time.monotonic() - start >= 0.0099
    # Nothing more: times out with what there is.
    start = time.monotonic()
    assert wire.read(1, 0.05) == b""
    assert time.monotonic() - start >= 0.049


def test_read_returns_fewer_bytes_at_timeout():
    clock = FakeClock()
    wire = Wire(1200, 1200, clock=clock)
    wire.send(b"ab")
    clock.t += 10 / 1200
    assert wire.read(2, 0) == b"a"


def test_cancel_from_drops_bytes_not_yet_on_the_line():
    clock = FakeClock()
    wire = Wire(1200, 1200, clock=clock)
    wire.send(b"abcd")
    dropped = wire.cancel_from(100.0 + 15 / 1200)  # during the second byte
    assert dropped == 2
    assert bytes(b.value for b in wire) == b"ab"
    # The line is free after the last byte that stayed.
    assert wire.line_free == pytest.approx(100.0 + 20 / 1200)


def test_same_baud_and_small_errors_pass_bytes_unchanged():
    for value in range(256):
        assert sample_frame(value, 115200, 115200) == (value, False)
        # 16 MHz optiboot runs at 111111 baud for "115200": 3.5 % off still works.
        assert sample_frame(value, 115200, 111111) == (value, False)


def test_wrong_baud_gives_deterministic_garbage_with_framing_errors():
    # Host at 57600, bootloader at 115200: the receiver sees each sender bit twice and
    # samples its stop bit inside the data.
    assert sample_frame(0x30, 57600, 115200) == (0x00, True)
    assert sample_frame(0x20, 57600, 115200) == (0x00, True)
    results = [sample_frame(v, 57600, 115200) for v in range(256)]
    assert results == [sample_frame(v, 57600, 115200) for v in range(256)]
    assert sum(framing for _, framing in results) >= 128
    assert all(got != v for v, (got, _) in enumerate(results) if v not in (0x00, 0xFF))


def test_wire_garbles_with_the_pair_of_rates_in_force_when_sent():
    clock = FakeClock()
    wire = Wire(115200, 57600, throttle=0, clock=clock)
    wire.send(b"\x14\x10")
    wire.rx_baud = 115200
    wire.send(b"\x14\x10")
    got = list(wire)
    assert [(b.value, b.framing_error) for b in got[2:]] == [(0x14, False), (0x10, False)]
    assert [b.value for b in got[:2]] != [0x14, 0x10]
