"""The simulated STM32's serial line: 8E1 parity, auto-baud, baud mismatch, resets,
faults, and how long erasing and programming take."""

from __future__ import annotations

import time

import pytest

from flashsh.sims.port import SimPort
from flashsh.sims.url import open_sim_port
from flashsh.sims.wire import FRAMING_8E1, FRAMING_8N1, Framing, receive_frame

ACK, NACK = 0x79, 0x1F


@pytest.fixture
def open_port():
    ports: list[SimPort] = []

    def start(
        query: str, baud: int = 115200, *, parity: str | None = "E", state: str = "bootloader"
    ) -> SimPort:
        port = open_sim_port(f"sim://stm32?{query}", baud)
        ports.append(port)
        if parity is not None:
            port.parity = parity
        port.timeout = 0.3
        assert port.sim.mcu.wait_for_state(state)
        return port

    yield start
    for port in ports:
        port.close()


def ask(port: SimPort, hexdata: str, size: int = 1) -> bytes:
    port.write(bytes.fromhex(hexdata))
    return port.read(size)


FAST = "chip=stm32f103c8&throttle=0&startup_ms=0"


# ---------------------------------------------------------------------- the frame model


def test_receive_frame_checks_even_parity():
    # 0x7F has seven ones: its even-parity bit is 1, the level an 8N1 stop bit has too.
    assert receive_frame(0x7F, 115200, 115200, FRAMING_8N1, FRAMING_8E1) == (0x7F, False, False)
    # 0x00 needs parity 0; an 8N1 sender's stop bit (1) sits there: parity error.
    assert receive_frame(0x00, 115200, 115200, FRAMING_8N1, FRAMING_8E1) == (0x00, False, True)
    # Odd parity is wrong for every byte at an even-parity receiver.
    odd = Framing(parity="O")
    assert all(receive_frame(v, 9600, 9600, odd, FRAMING_8E1)[2] for v in range(256))
    # An 8N1 receiver reads an 8E1 byte whose parity bit is 0 with a framing error.
    assert receive_frame(0x00, 9600, 9600, FRAMING_8E1, FRAMING_8N1) == (0x00, True, False)
    assert receive_frame(0x01, 9600, 9600, FRAMING_8E1, FRAMING_8N1) == (0x01, False, False)


def test_8e1_bytes_take_eleven_bit_times(open_port):
    port = open_port("chip=stm32f103c8&throttle=1&startup_ms=0", 9600)
    assert ask(port, "7F") == bytes([ACK])
    start = time.monotonic()
    port.timeout = 1.0
    reply = ask(port, "00 FF", 15)  # 2 bytes out, 15 back: 17 x 11 bits at 9600 baud
    elapsed = time.monotonic() - start
    assert reply[0] == ACK and len(reply) == 15
    # At 10 bits a byte it would be 17.7 ms.
    assert 17 * 11 / 9600 <= elapsed < 17 * 11 / 9600 + 0.25


# ---------------------------------------------------------------------- parity mismatch


def test_host_at_8n1_loses_the_bytes_whose_parity_is_wrong(open_port):
    port = open_port(FAST, parity=None)  # pyserial's default 8N1
    assert port.parity == "N"
    assert ask(port, "7F") == bytes([ACK])  # 0x7F's parity bit happens to be 1
    # Get: 0x00 and 0xFF both have even parity bits of 0: both ignored, no answer.
    assert ask(port, "00 FF") == b""
    # Get ID: 0x02 and 0xFD need parity 1, which the 8N1 stop bit supplies.
    assert ask(port, "02 FD", 5) == bytes.fromhex("79 01 04 10 79")
    assert port.sim.rom.line_errors == 2
    # Switching the port to even parity fixes the line.
    port.parity = "E"
    assert ask(port, "00 FF", 15)[0] == ACK


def test_host_at_odd_parity_never_syncs(open_port):
    port = open_port(FAST, parity="O")
    assert ask(port, "7F 7F 7F") == b""
    assert not port.sim.synced
    assert any("auto-baud: ignored" in e.what for e in port.sim.mcu.events)


def test_port_format_attributes_are_checked():
    port = open_sim_port(f"sim://stm32?{FAST}", 115200)
    try:
        with pytest.raises(ValueError):
            port.parity = "X"
        with pytest.raises(ValueError):
            port.bytesize = 9
        port.stopbits = 2
        assert (port.bytesize, port.parity, port.stopbits) == (8, "N", 2)
    finally:
        port.close()


def test_an_avr_simulator_ignores_the_port_format(open_port):
    port = open_sim_port("sim://stk500v1?throttle=0&startup_ms=0&flashes=0", 115200)
    try:
        port.parity = "E"  # no set_host_format there: bytes pass as before
        port.timeout = 0.5
        assert port.sim.mcu.wait_for_state("bootloader")
        port.write(b"\x30\x20")
        assert port.read(2) == b"\x14\x10"
    finally:
        port.close()


# ---------------------------------------------------------------------- auto-baud


@pytest.mark.parametrize("baud", [1200, 9600, 57600, 115200, 230400])
def test_auto_baud_follows_the_host(open_port, baud):
    port = open_port(FAST, baud)
    assert ask(port, "7F") == bytes([ACK])
    assert port.sim.rom.baud == baud
    assert ask(port, "02 FD", 5) == bytes.fromhex("79 01 04 10 79")


def test_auto_baud_below_1200_fails(open_port):
    port = open_port(FAST, 600)
    assert ask(port, "7F") == b""
    assert not port.sim.synced


def test_changing_baud_after_sync_garbles_the_line(open_port):
    port = open_port(FAST, 115200)
    assert ask(port, "7F") == bytes([ACK])
    port.baudrate = 57600
    assert ask(port, "02 FD", 5) != bytes.fromhex("79 01 04 10 79")
    assert port.sim.rom.line_errors > 0 or port.sim.mcu.framing_errors > 0
    # Back at the synced rate the ROM holds half a garbled pair (0xFD arrived as 0xE6).
    # The pair FF 00 would draw a NACK for (E6, FF) and leave 00 waiting; single 0xFF
    # bytes until a NACK leave it waiting for a fresh command.
    port.baudrate = 115200
    for _ in range(4):
        if ask(port, "FF", 64) == bytes([NACK]):
            break
    assert ask(port, "02 FD", 5) == bytes.fromhex("79 01 04 10 79")


def test_reset_button_needs_a_new_sync_and_a_new_baud_may_be_chosen(open_port):
    port = open_port(FAST, 115200)
    assert ask(port, "7F") == bytes([ACK])
    port.sim.press_reset()
    assert port.sim.mcu.wait_for_state("bootloader")
    assert not port.sim.synced
    port.baudrate = 19200
    assert ask(port, "02 FD") == b""
    assert ask(port, "7F") == bytes([ACK])
    assert port.sim.rom.baud == 19200


def test_dtr_and_rts_do_nothing_unless_autoreset(open_port):
    port = open_port(FAST)
    assert ask(port, "7F") == bytes([ACK])
    port.dtr = False
    port.dtr = True
    port.rts = False
    port.rts = True
    assert ask(port, "7F") == b""  # still synced: waits for the complement
    wired = open_port(FAST + "&autoreset=1")
    assert ask(wired, "7F") == bytes([ACK])
    wired.dtr = False
    wired.dtr = True
    assert wired.sim.mcu.wait_for_state("bootloader")
    assert ask(wired, "7F") == bytes([ACK])  # a fresh sync after the reset
    # Opening the port asserted both lines (one reset), then the DTR edge.
    assert wired.sim.mcu.resets.get("external") == 2


# ---------------------------------------------------------------------- faults


def test_drop_fault_loses_the_sync_ack(open_port):
    port = open_port(FAST + "&fault=drop:1")
    assert ask(port, "7F") == b""
    assert port.sim.synced
    # The ROM is synced: the next 0x7F opens a command, the one after is its bad
    # complement and draws NACK (what stm32flash's init recovery expects).
    assert ask(port, "7F") == b""
    assert ask(port, "7F") == bytes([NACK])


def test_nack_fault_refuses_the_nth_command(open_port):
    port = open_port(FAST + "&fault=nack:2")
    assert ask(port, "7F") == bytes([ACK])
    assert ask(port, "02 FD", 5) == bytes.fromhex("79 01 04 10 79")
    assert ask(port, "02 FD") == bytes([NACK])
    assert ask(port, "02 FD", 5) == bytes.fromhex("79 01 04 10 79")


def test_noise_fault_swallows_a_byte(open_port):
    port = open_port(FAST + "&fault=noise:1")
    assert ask(port, "7F") == b""
    assert ask(port, "7F") == bytes([ACK])


def test_dead_and_bad_fault_names(open_port):
    port = open_port(FAST + "&fault=dead", state="dead")
    assert ask(port, "7F") == b""
    with pytest.raises(ValueError, match="nack:N"):
        open_sim_port(f"sim://stm32?{FAST}&fault=nosync:1", 115200)
    with pytest.raises(ValueError, match="unknown option"):
        open_sim_port(f"sim://stm32?{FAST}&bogus=1", 115200)
    with pytest.raises(ValueError, match="unknown STM32 part"):
        open_sim_port("sim://stm32?chip=stm32f999", 115200)


# ---------------------------------------------------------------------- flash timing


def acked_after(port: SimPort, hexdata: str, timeout: float = 5.0) -> float:
    """Send the final stage and return the seconds until its ACK."""
    port.timeout = timeout
    start = time.monotonic()
    assert ask(port, hexdata) == bytes([ACK])
    return time.monotonic() - start


def test_page_erase_takes_the_datasheet_time_per_page(open_port):
    port = open_port("chip=stm32f103c8&throttle=1&startup_ms=0")
    assert ask(port, "7F") == bytes([ACK])
    assert ask(port, "43 BC") == bytes([ACK])
    # Three pages at 20 ms typical (F103 datasheet tERASE), plus the bytes' time.
    typical = acked_after(port, "02 00 01 02 01")
    slow = open_port("chip=stm32f103c8&throttle=1&startup_ms=0&timing=max")
    assert ask(slow, "7F") == bytes([ACK])
    assert ask(slow, "43 BC") == bytes([ACK])
    longest = acked_after(slow, "02 00 01 02 01")  # 40 ms a page
    assert 0.060 <= typical < 0.5 and 0.120 <= longest < 0.6
    assert longest - typical > 0.04


def test_f4_sector_and_mass_erase_times_scale_with_throttle(open_port):
    # 128 KiB sector: 1 s typical; mass erase of a 256 KiB F401: 2 s. Throttle 0.05.
    port = open_port("chip=stm32f401cc&throttle=0.05&startup_ms=0")
    assert ask(port, "7F") == bytes([ACK])
    assert ask(port, "44 BB") == bytes([ACK])
    sector = acked_after(port, "00 00 00 05 05")
    assert ask(port, "44 BB") == bytes([ACK])
    mass = acked_after(port, "FF FF 00")
    assert 0.050 <= sector < 0.5 and 0.100 <= mass < 0.6 and mass > sector


def test_erase_and_program_times_can_be_set(open_port):
    port = open_port("chip=stm32f103c8&throttle=1&startup_ms=0&erase_ms=50&program_us=1000")
    assert ask(port, "7F") == bytes([ACK])
    assert ask(port, "43 BC") == bytes([ACK])
    assert 0.050 <= acked_after(port, "00 07 07") < 0.5
    assert ask(port, "31 CE") == bytes([ACK])
    assert ask(port, "08 00 00 00 08") == bytes([ACK])
    # 8 bytes = 4 half-words at 1 ms each.
    assert 0.004 <= acked_after(port, "07 00 01 02 03 04 05 06 07 07") < 0.3
