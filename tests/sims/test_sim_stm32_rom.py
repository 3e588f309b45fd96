"""The simulated STM32 ROM bootloader, byte by byte as AN3155 gives the exchanges.

A host here is a SimPort at 8E1 sending raw bytes; the expected replies are the fact
sheet's (docs: stm32-rom-uart.md §4-§7): ACK 0x79, NACK 0x1F, single bytes followed by
their complement, blocks followed by their XOR.
"""

from __future__ import annotations

from functools import reduce
from operator import xor

import pytest

from flashsh.sims.port import SimPort
from flashsh.sims.url import open_sim_port

ACK, NACK = 0x79, 0x1F


def block(data: bytes) -> bytes:
    """``data`` and its XOR checksum."""
    return data + bytes([reduce(xor, data, 0)])


def address(value: int) -> bytes:
    return block(value.to_bytes(4, "big"))


def count(n: int) -> bytes:
    """A one-byte N-1 count followed by its complement (Read Memory's length)."""
    return bytes([n - 1, (n - 1) ^ 0xFF])


class Host:
    """A raw AN3155 host on a SimPort."""

    def __init__(self, port: SimPort) -> None:
        self.port = port
        self.sim = port.sim

    def send(self, data: bytes | str) -> None:
        self.port.write(bytes.fromhex(data) if isinstance(data, str) else data)

    def reply(self, size: int, timeout: float = 2.0) -> bytes:
        self.port.timeout = timeout
        return self.port.read(size)

    def ask(self, data: bytes | str, size: int = 1) -> bytes:
        self.send(data)
        return self.reply(size)

    def silent(self, seconds: float = 0.2) -> bool:
        """Nothing comes back within ``seconds``."""
        return self.reply(1, seconds) == b""

    def unanswered(self, data: bytes | str) -> bool:
        """Send ``data``; True when nothing comes back."""
        self.send(data)
        return self.silent()

    def sync(self) -> None:
        assert self.ask("7F") == bytes([ACK])

    def command(self, code: int) -> int:
        return self.ask(bytes([code, code ^ 0xFF]))[0]

    def read(self, at: int, n: int) -> bytes:
        assert self.command(0x11) == ACK
        assert self.ask(address(at)) == bytes([ACK])
        reply = self.ask(count(n), n + 1)
        assert reply[0] == ACK, reply
        return reply[1:]

    def write(self, at: int, data: bytes) -> int:
        """Write Memory; the last stage's reply (or the first NACK)."""
        if (got := self.command(0x31)) != ACK:
            return got
        if (got := self.ask(address(at))[0]) != ACK:
            return got
        return self.ask(block(bytes([len(data) - 1]) + data))[0]

    def resync_after_reset(self) -> None:
        """After a reset the ROM ignores everything until a fresh 0x7F."""
        assert self.unanswered("00 FF")
        self.sync()


@pytest.fixture
def rom():
    ports: list[SimPort] = []

    def open_rom(
        query: str = "chip=stm32f103c8", *, sync: bool = True, state: str = "bootloader"
    ) -> Host:
        url = f"sim://stm32?{query}&throttle=0&startup_ms=0"
        port = open_sim_port(url, 115200)
        ports.append(port)
        port.parity = "E"
        host = Host(port)
        assert port.sim.mcu.wait_for_state(state)
        if sync:
            host.sync()
        return host

    yield open_rom
    for port in ports:
        port.close()


# ---------------------------------------------------------------------- sync and framing


def test_sync_then_a_second_7f_waits_for_its_complement_and_is_nacked(rom):
    host = rom()
    # Taken as the first byte of a command: the ROM waits, with no timeout.
    assert host.unanswered("7F")
    # 7F 7F is a bad command pair: NACK, the "already initialised" answer.
    assert host.ask("7F") == bytes([NACK])
    assert host.sim.synced


def test_bytes_before_the_sync_byte_are_ignored(rom):
    host = rom(sync=False)
    assert host.unanswered("00 FF 02 FD")
    host.sync()
    assert host.ask("02 FD", 5) == bytes.fromhex("79 01 04 10 79")


def test_get_on_f103_matches_the_fact_sheet_example(rom):
    host = rom()
    assert host.ask("00 FF", 15) == bytes.fromhex("79 0B 22 00 01 02 11 21 31 43 63 73 82 92 79")


@pytest.mark.parametrize(
    ("chip", "pid", "erase"),
    [
        ("stm32f103c6", 0x412, 0x43),
        ("stm32f103re", 0x414, 0x43),
        ("stm32f042k6", 0x445, 0x44),
        ("stm32f072rb", 0x448, 0x44),
        ("stm32f401cc", 0x423, 0x44),
        ("stm32f401re", 0x433, 0x44),
        ("stm32f407vg", 0x413, 0x44),
        ("stm32f446re", 0x421, 0x44),
        ("stm32g0b1re", 0x467, 0x44),
    ],
)
def test_each_part_reports_its_pid_and_one_erase_command(rom, chip, pid, erase):
    host = rom(f"chip={chip}")
    get = host.ask("00 FF", 15)
    assert get[0] == ACK and get[-1] == ACK and get[1] == 11
    assert erase in get[3:-1] and (erase ^ 0x07) not in get[3:-1]  # 0x43 xor 0x44
    assert host.ask("02 FD", 5) == bytes([ACK, 1, pid >> 8, pid & 0xFF, ACK])
    version = host.ask("01 FE", 5)
    assert version == bytes([ACK, get[2], 0, 0, ACK])


def test_bad_complement_and_unlisted_commands_are_nacked(rom):
    host = rom()
    assert host.ask("00 00") == bytes([NACK])
    assert host.ask("44 BB") == bytes([NACK])  # F1 lists Erase, not Extended Erase
    assert host.ask("A1 5E") == bytes([NACK])  # Get Checksum is not in its list
    assert host.ask("02 FD", 5) == bytes.fromhex("79 01 04 10 79")


# ---------------------------------------------------------------------- Read Memory


def test_read_256_bytes_has_no_trailing_ack(rom):
    host = rom()
    host.sim.memory.flash[:256] = bytes(range(256))
    assert host.ask("11 EE") == bytes([ACK])
    assert host.ask("08 00 00 00 08") == bytes([ACK])
    assert host.ask("FF 00", 257) == bytes([ACK]) + bytes(range(256))
    assert host.silent()


def test_read_refusals(rom):
    host = rom()
    # Address checksum wrong: NACK after the address.
    assert host.command(0x11) == ACK
    assert host.ask("08 00 00 00 00") == bytes([NACK])
    # Beyond the PID group's 128 KiB of flash.
    assert host.command(0x11) == ACK
    assert host.ask(address(0x08020000)) == bytes([NACK])
    # The ROM's own RAM (first 512 bytes on F1).
    assert host.command(0x11) == ACK
    assert host.ask(address(0x200001FC)) == bytes([NACK])
    # Length complement wrong: NACK at the length stage.
    assert host.command(0x11) == ACK
    assert host.ask(address(0x08000000)) == bytes([ACK])
    assert host.ask("0F 0F") == bytes([NACK])
    # A read running off the end of flash.
    assert host.command(0x11) == ACK
    assert host.ask(address(0x0801FF80)) == bytes([ACK])
    assert host.ask(count(256)) == bytes([NACK])
    # Still in step afterwards.
    assert host.read(0x0801FF80, 128) == b"\xff" * 128


def test_read_flash_size_register_option_bytes_and_system_memory(rom):
    host = rom()
    assert host.read(0x1FFFF7E0, 2) == (64).to_bytes(2, "little")
    assert host.read(0x1FFFF800, 16) == bytes.fromhex(
        "A5 5A FF 00 FF 00 FF 00 FF 00 FF 00 FF 00 FF 00"
    )
    assert host.read(0x1FFFF000, 10) == b"STM32 ROM "
    assert host.read(0x20000200, 4) == bytes(4)
    f4 = rom("chip=stm32f401cc")
    assert f4.read(0x1FFF7A22, 2) == (256).to_bytes(2, "little")
    # stm32loader's form: one 256-byte read of the aligned block holding the registers.
    assert f4.read(0x1FFF7A00, 256)[0x22:0x24] == (256).to_bytes(2, "little")
    assert rom("chip=stm32g0b1re").read(0x1FFF75E0, 2) == (512).to_bytes(2, "little")


# ---------------------------------------------------------------------- Write Memory


def test_write_the_fact_sheet_example(rom):
    host = rom()
    assert host.ask("31 CE") == bytes([ACK])
    assert host.ask("08 00 00 00 08") == bytes([ACK])
    assert host.ask("03 DE AD BE EF 21") == bytes([ACK])
    assert host.sim.flash[:6] == bytes.fromhex("DE AD BE EF FF FF")
    assert host.read(0x08000000, 4) == bytes.fromhex("DE AD BE EF")


def test_write_refusals_leave_flash_alone(rom):
    host = rom()
    # Bad data checksum.
    assert host.command(0x31) == ACK
    assert host.ask(address(0x08000000)) == bytes([ACK])
    assert host.ask("03 DE AD BE EF 00") == bytes([NACK])
    # Unaligned address, length not a multiple of 4.
    assert host.write(0x08000002, b"\x01\x02\x03\x04") == NACK
    assert host.write(0x08000000, b"\x01\x02\x03") == NACK
    # System memory and the ROM's RAM are not writable: NACK after the address.
    assert host.write(0x1FFFF000, b"\x00" * 4) == NACK
    assert host.write(0x20000000, b"\x00" * 4) == NACK
    assert host.sim.flash[:8] == b"\xff" * 8
    assert host.sim.memory.stats.flash_writes == 0


def test_flash_is_written_only_where_erased(rom):
    host = rom()
    assert host.write(0x08000000, b"\x12\x34\x56\x78") == ACK
    # Rewriting the same data (stm32flash's verify retry) is accepted...
    assert host.write(0x08000000, b"\x12\x34\x56\x78") == ACK
    # ...different data over programmed flash is not.
    assert host.write(0x08000000, b"\x00\x00\x00\x00") == NACK
    assert host.sim.flash[:4] == b"\x12\x34\x56\x78"
    assert host.sim.memory.stats.refused_writes == 1


def test_overwrite_and_mode_ands_the_bits_in(rom):
    host = rom("chip=stm32f103c8&overwrite=and")
    assert host.write(0x08000000, b"\xf0\xf0\xf0\xf0") == ACK
    assert host.write(0x08000000, b"\x3c\x3c\x3c\x3c") == ACK
    assert host.sim.flash[:4] == b"\x30\x30\x30\x30"


def test_write_to_ram_then_read_back(rom):
    host = rom()
    assert host.write(0x20000200, bytes(range(16))) == ACK
    assert host.read(0x20000200, 16) == bytes(range(16))


# ---------------------------------------------------------------------- Go


def test_go_to_flash_starts_the_application_which_ignores_the_rom_protocol(rom):
    host = rom()
    assert host.ask("21 DE") == bytes([ACK])
    assert host.ask("08 00 00 00 08") == bytes([ACK])
    assert host.sim.mcu.wait_for_state("application")
    assert host.sim.rom.jumps == [0x08000000]
    assert host.unanswered("7F")
    # The reset button with BOOT0 high brings the ROM back.
    host.sim.press_reset()
    assert host.sim.mcu.wait_for_state("bootloader")
    host.sync()


def test_go_refuses_system_memory_and_the_roms_ram(rom):
    host = rom()
    for target in (0x1FFFF000, 0x20000000, 0x00000000):
        assert host.command(0x21) == ACK
        assert host.ask(address(target)) == bytes([NACK])
    assert host.sim.state == "bootloader"


def test_go_to_a_ram_program_that_sets_sysresetreq_resets_the_chip(rom):
    host = rom()
    # Vector table (SP, entry) then code whose literal pool holds AIRCR and the key.
    stub = (
        bytes(8)
        + bytes(8)
        + (0x05FA0004).to_bytes(4, "little")
        + (0xE000ED0C).to_bytes(4, "little")
    )
    assert host.write(0x20000200, stub) == ACK
    assert host.command(0x21) == ACK
    assert host.ask(address(0x20000200)) == bytes([ACK])
    assert host.sim.mcu.wait_for_state("bootloader")
    host.resync_after_reset()


# ---------------------------------------------------------------------- Erase (0x43)


def test_erase_pages_the_fact_sheet_example(rom):
    host = rom()
    host.sim.memory.flash[:] = b"\x00" * len(host.sim.memory.flash)
    assert host.ask("43 BC") == bytes([ACK])
    assert host.ask("02 00 01 02 01") == bytes([ACK])
    flash = host.sim.flash
    assert flash[: 3 * 1024] == b"\xff" * 3072 and flash[3072:3073] == b"\x00"
    assert host.sim.rom.history[-1] == (0x43, [0, 1, 2])


def test_erase_global_and_refusals(rom):
    host = rom()
    host.sim.memory.flash[:] = b"\x00" * len(host.sim.memory.flash)
    # Page list checksum wrong; a page the part does not have; FF with a bad complement.
    assert host.command(0x43) == ACK
    assert host.ask("01 00 01 01") == bytes([NACK])
    assert host.command(0x43) == ACK
    assert host.ask(block(bytes([0, 200]))) == bytes([NACK])
    assert host.command(0x43) == ACK
    assert host.ask("FF 01") == bytes([NACK])
    assert host.sim.flash.count(0xFF) == 0
    assert host.command(0x43) == ACK
    assert host.ask("FF 00") == bytes([ACK])
    assert host.sim.flash == b"\xff" * 0x20000


# ---------------------------------------------------------------------- Extended Erase (0x44)


def test_extended_erase_sectors_on_f4(rom):
    host = rom("chip=stm32f401cc")
    host.sim.memory.flash[:] = b"\x00" * len(host.sim.memory.flash)
    assert host.ask("44 BB") == bytes([ACK])
    assert host.ask("00 02 00 00 00 01 00 02 01") == bytes([ACK])
    flash = host.sim.flash
    # Sectors 0-2 are 16 KiB each: 48 KiB erased, sector 3 untouched.
    assert flash[:0xC000] == b"\xff" * 0xC000 and flash[0xC000] == 0
    # Sector 6 does not exist on a 256 KiB F401 (sectors 0-5).
    assert host.command(0x44) == ACK
    assert host.ask(block(bytes([0, 0, 0, 6]))) == bytes([NACK])
    # Reserved special codes and bank erase on a single-bank part.
    for code in ("FF F5 0A", "FF FE 01", "FF FD 02"):
        assert host.command(0x44) == ACK
        assert host.ask(code) == bytes([NACK])
    assert host.command(0x44) == ACK
    assert host.ask("FF FF 00") == bytes([ACK])
    assert host.sim.flash == b"\xff" * 0x40000
    assert host.sim.rom.history[-1] == (0x44, "mass")


def test_extended_erase_on_the_dual_bank_g0b1(rom):
    host = rom("chip=stm32g0b1re")
    memory = host.sim.memory
    memory.flash[:] = b"\x00" * len(memory.flash)
    # Bank 2's first page is numbered 256: it lies at 0x08040000.
    assert host.command(0x44) == ACK
    assert host.ask(block(bytes([0, 0, 1, 0]))) == bytes([ACK])
    assert memory.flash[0x40000:0x40800] == b"\xff" * 0x800 and memory.flash[0x40800] == 0
    assert memory.flash[:0x800] == b"\x00" * 0x800
    # Page 128 does not exist with RM0444's numbering.
    assert host.command(0x44) == ACK
    assert host.ask(block(bytes([0, 0, 0, 128]))) == bytes([NACK])
    # Bank 2 mass erase leaves bank 1 alone.
    assert host.command(0x44) == ACK
    assert host.ask("FF FD 02") == bytes([ACK])
    assert memory.flash[0x40000:] == b"\xff" * 0x40000
    assert memory.flash[:0x40000] == b"\x00" * 0x40000


# ---------------------------------------------------------------------- protection


def test_write_protect_resets_and_then_writes_and_erases_are_acked_but_ignored(rom):
    host = rom()
    assert host.write(0x08000000, b"\x11\x22\x33\x44") == ACK
    assert host.ask("63 9C") == bytes([ACK])
    assert host.ask("01 00 01 00", 1) == bytes([ACK])  # sectors 0 and 1: 8 KiB
    assert host.sim.mcu.wait_for_state("bootloader")
    host.resync_after_reset()
    # WRP0 now 0xFC (active low) with its complement.
    assert host.read(0x1FFFF808, 2) == bytes([0xFC, 0x03])
    assert host.write(0x08000004, b"\x55\x66\x77\x88") == ACK
    assert host.command(0x43) == ACK
    assert host.ask(block(bytes([0, 0]))) == bytes([ACK])
    assert host.sim.flash[:8] == b"\x11\x22\x33\x44\xff\xff\xff\xff"
    # Page 8 (the third 4 KiB sector) is not protected.
    assert host.write(0x08002000, b"\x01\x02\x03\x04") == ACK
    assert host.sim.flash[0x2000:0x2004] == b"\x01\x02\x03\x04"
    # Write Unprotect: two ACKs, a reset, then erasing works.
    assert host.ask("73 8C", 2) == bytes([ACK, ACK])
    assert host.sim.mcu.wait_for_state("bootloader")
    host.resync_after_reset()
    assert host.command(0x43) == ACK
    assert host.ask(block(bytes([0, 0]))) == bytes([ACK])
    assert host.sim.flash[:4] == b"\xff" * 4


def test_readout_protect_resets_and_refuses_everything_but_the_get_commands(rom):
    host = rom()
    assert host.write(0x08000000, b"\xaa\xbb\xcc\xdd") == ACK
    assert host.ask("82 7D", 2) == bytes([ACK, ACK])
    assert host.sim.mcu.wait_for_state("bootloader")
    host.resync_after_reset()
    assert host.sim.memory.rdp_level == 1
    assert host.ask("00 FF", 15)[0] == ACK
    assert host.ask("01 FE", 5)[0] == ACK
    assert host.ask("02 FD", 5)[0] == ACK
    # NACK straight after the command pair.
    for code in (0x11, 0x21, 0x31, 0x43, 0x63, 0x73, 0x82):
        assert host.command(code) == NACK, hex(code)
    # Readout Unprotect: ACK, mass erase, ACK, reset; everything back to default.
    assert host.ask("92 6D", 2) == bytes([ACK, ACK])
    assert host.sim.mcu.wait_for_state("bootloader")
    host.resync_after_reset()
    assert host.sim.memory.rdp_level == 0
    assert host.sim.flash == b"\xff" * 0x20000
    assert host.read(0x1FFFF800, 2) == bytes([0xA5, 0x5A])


def test_rdp_start_state_from_the_url(rom):
    host = rom("chip=stm32f103c8&rdp=1")
    assert host.command(0x11) == NACK
    assert host.ask("02 FD", 5) == bytes.fromhex("79 01 04 10 79")


def test_rdp_level_2_disables_the_rom(rom):
    host = rom("chip=stm32f401cc&rdp=2", sync=False, state="application")
    assert host.unanswered("7F")


def test_option_byte_write_resets_and_takes_effect(rom):
    host = rom()
    # RDP byte 0x00 (not 0xA5): level 1 once the option bytes load at reset.
    data = bytes.fromhex("00 FF FF 00 FF 00 FF 00 FF 00 FF 00 FF 00 FF 00")
    assert host.write(0x1FFFF800, data) == ACK
    assert host.sim.mcu.wait_for_state("bootloader")
    host.resync_after_reset()
    assert host.sim.memory.rdp_level == 1
    assert host.command(0x11) == NACK


def test_erased_option_bytes_mean_read_protection(rom):
    # Writing just the USER pair leaves RDP erased (0xFF): protected, as on a real F1.
    host = rom()
    assert host.write(0x1FFFF802, b"\xff\x00\xff\x00") == NACK  # not 4-aligned
    assert host.write(0x1FFFF804, b"\xff\x00\xff\x00") == ACK
    assert host.sim.mcu.wait_for_state("bootloader")
    host.resync_after_reset()
    assert host.sim.memory.rdp_level == 1
