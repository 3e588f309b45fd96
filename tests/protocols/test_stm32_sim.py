"""flashsh against the simulated STM32 ROM, end to end through the shell, as a user works.

The simulator keeps a history of what its ROM did (erases, writes, jumps), so each test
can check not only the result but that nothing else was erased or written.
"""

from __future__ import annotations

import random

import pytest
from shelldriver import FAST, Driver
from test_stm32_wire import ScriptedLink

from flashsh.errors import FlashshError
from flashsh.protocols import ProbeOptions, detect
from flashsh.protocols.stm32_uart import Stm32Uart
from flashsh.transports.serial import open_serial

BLUE_PILL = f"sim://stm32?chip=stm32f103c8&{FAST}"
F407 = f"sim://stm32?chip=stm32f407vg&{FAST}"
G0B1 = f"sim://stm32?chip=stm32g0b1re&{FAST}"
FLASH = 0x08000000
#: The Blue Pill's 64 KiB; the simulator holds the PID group's whole 128 KiB array.
SIZE = 0x10000
ERASE, EXTENDED_ERASE, WRITE, READ, GO = 0x43, 0x44, 0x31, 0x11, 0x21


@pytest.fixture
def shell():
    drivers: list[Driver] = []

    def make(url: str | None = None, **options) -> Driver:
        # Auto-detection (AVR probes first) is tested once; the rest go straight there.
        options.setdefault("protocol", "stm32")
        driver = Driver(**options)
        drivers.append(driver)
        if url is not None:
            driver.ok(f"connect '{url}'")
        return driver

    yield make
    for driver in drivers:
        driver.close()


def image(tmp_path, size: int, seed: int = 1, name: str = "app.bin"):
    data = random.Random(seed).randbytes(size)
    path = tmp_path / name
    path.write_bytes(data)
    return path, data


def erases(sim) -> list[tuple]:
    return [h for h in sim.rom.history if h[0] in (ERASE, EXTENDED_ERASE)]


def writes(sim) -> list[tuple]:
    return [h for h in sim.rom.history if h[0] == WRITE]


# ---------------------------------------------------------------------- connecting


def test_a_new_user_connects_to_a_blue_pill_with_no_options(shell):
    sh = shell(protocol="auto")
    connected = sh.ok(f"connect '{BLUE_PILL}'")
    assert connected["protocol"] == "stm32"
    assert connected["chip"] == "STM32F103x8"
    assert connected["bootloader"] == "STM32 ROM bootloader v2.2 (USART)"
    info = sh.ok("info")
    details = info["details"]
    assert details["rom_version"] == "2.2"
    assert details["product_id"] == "0x410 (STM32F10x medium density)"
    assert details["flash_size"] == "64 KiB (from the flash-size register at 0x1ffff7e0)"
    assert details["readout_protection"].startswith("0 ")
    assert "Readout Unprotect" in details["commands"] and "Erase" in details["commands"]
    flash = info["regions"][0]
    assert (flash["name"], flash["start"], flash["size"]) == ("flash", FLASH, 0x10000)
    sh.shell.options.json = False
    text = sh.printed("info")
    assert "product id" in text and "readout protection" in text and "flash size" in text


def test_connecting_sends_the_sync_then_get_version_get_and_get_id():
    with open_serial(BLUE_PILL, 115200) as link:
        sent: list[bytes] = []
        write = link.write

        def recording(data: bytes) -> None:
            sent.append(bytes(data))
            write(data)

        link.write = recording  # type: ignore[method-assign]
        found = detect(link, ProbeOptions(protocol="stm32"))
        assert [s.hex(" ") for s in sent[:4]] == ["7f", "01 fe", "00 ff", "02 fd"]
        assert found.how.endswith("fresh from reset)")


def test_a_rom_an_earlier_connection_synchronised_answers_nack():
    with open_serial(BLUE_PILL, 115200) as link:
        assert Stm32Uart.probe(link, reset=False) is not None
        again = Stm32Uart.probe(link, reset=False)
        assert again is not None and "NACK" in again.how
        assert again.identify().chip == "STM32F103x8"


def test_a_rom_left_inside_a_command_is_brought_back():
    with open_serial(BLUE_PILL, 115200) as link:
        rom = Stm32Uart.probe(link, reset=False)
        assert rom is not None
        link.write(bytes.fromhex("11 EE 08 00"))  # Read Memory, half an address
        rom.reconnect()
        assert rom.read(rom.memory_map().flash, FLASH, 4) == b"\xff" * 4


@pytest.mark.parametrize(
    ("url", "chip", "size"),
    [
        (F407, "STM32F405/407/415/417", 1024 * 1024),
        (G0B1, "STM32G0B1xE", 512 * 1024),
        (f"sim://stm32?chip=stm32f072rb&{FAST}", "STM32F072xB", 128 * 1024),
        (f"sim://stm32?chip=stm32f103re&{FAST}", "STM32F103xE", 512 * 1024),
    ],
)
def test_other_families_are_named_and_sized(shell, url, chip, size):
    info = shell(url).ok("info")
    assert info["chip"] == chip
    assert info["regions"][0]["size"] == size


# ---------------------------------------------------------------------- program


def test_program_bin_verify_reset_erases_only_its_pages(shell, tmp_path):
    path, data = image(tmp_path, 3000)
    sh = shell(BLUE_PILL)
    result = sh.ok(f"program {path} verify reset")
    sim = sh.sim
    assert result["start"] == FLASH  # a .bin goes to the flash base
    assert result["erased"] == "0x08000000-0x08000bff" and result["verified"]
    assert erases(sim) == [(ERASE, [0, 1, 2])]
    assert [(a, n) for _, a, n in writes(sim)] == [(FLASH + i * 256, 256) for i in range(12)]
    assert sim.flash[:3000] == data and sim.flash[3000:SIZE] == b"\xff" * (SIZE - 3000)
    assert sim.rom.jumps == [FLASH]


def test_read_bank_returns_what_was_written(shell, tmp_path):
    path, data = image(tmp_path, 5000, seed=2)
    sh = shell(BLUE_PILL)
    sh.ok(f"program {path} verify reset")
    sh.sim.press_reset()  # BOOT0 is high: the ROM runs again, and flashsh reconnects
    back = tmp_path / "back.bin"
    sh.ok(f"read_bank flash {back} 0 5000")
    assert back.read_bytes() == data
    assert sh.ok(f"verify_image {path}")["match"] is True


def test_image_elsewhere_in_flash_is_left_alone(shell, tmp_path):
    old = tmp_path / "old.bin"
    old.write_bytes(random.Random(3).randbytes(0x10000))
    sh = shell(f"{BLUE_PILL}&image={old}")
    path, data = image(tmp_path, 3000, seed=4)
    sh.ok(f"program {path} 0x08002000 verify")
    flash = sh.sim.flash[:SIZE]
    assert erases(sh.sim) == [(ERASE, [8, 9, 10])]
    assert flash[0x2000 : 0x2000 + 3000] == data
    assert flash[:0x2000] == old.read_bytes()[:0x2000]
    assert flash[0x2C00:] == old.read_bytes()[0x2C00:]
    # The rest of the last page went with the erase (as with any erase-first tool).
    assert flash[0x2000 + 3000 : 0x2C00] == b"\xff" * (0x2C00 - 0x2000 - 3000)


def test_diff_erases_and_rewrites_only_the_page_that_changed(shell, tmp_path):
    path, data = image(tmp_path, 4096, seed=5)
    sh = shell(BLUE_PILL)
    sh.ok(f"program {path}")
    changed = bytearray(data)
    changed[2500] ^= 0xFF
    path.write_bytes(changed)
    result = sh.ok(f"program {path} diff verify")
    assert erases(sh.sim)[-1] == (ERASE, [2])
    assert (result["pages_written"], result["pages_unchanged"]) == (4, 12)
    assert sh.sim.flash[:4096] == bytes(changed)


def test_f4_sectors_are_erased_with_extended_erase(shell, tmp_path):
    path, data = image(tmp_path, 20 * 1024, seed=6)
    sh = shell(F407)
    result = sh.ok(f"program {path} verify")
    assert erases(sh.sim) == [(EXTENDED_ERASE, [0, 1])]  # two 16 KiB sectors
    assert result["erased"] == "0x08000000-0x08007fff"
    assert sh.sim.flash[: len(data)] == data


def test_write_patches_bytes_and_keeps_the_rest_of_the_page(shell, tmp_path):
    path, data = image(tmp_path, 1024, seed=7)
    sh = shell(BLUE_PILL)
    sh.ok(f"program {path}")
    sh.ok("write flash 0x08000010 1 2 3 4")
    expected = bytearray(data)
    expected[0x10:0x14] = b"\x01\x02\x03\x04"
    assert sh.sim.flash[:1024] == bytes(expected)


def test_ram_takes_bytes_and_go_runs_them(shell):
    sh = shell(BLUE_PILL)
    sh.ok("write ram 0x20001000 0x00 0x20 0x00 0x20 0x09 0x10 0x00 0x20")
    assert erases(sh.sim) == []  # RAM needs no erase
    assert sh.sim.memory.read(0x20001000, 8) == bytes.fromhex("00200020 09100020")
    assert "outside flash and the RAM" in sh.error("go 0x20000000")  # the ROM's own RAM
    sh.ok("go 0x20001000")
    assert sh.sim.rom.jumps == [0x20001000]


# ---------------------------------------------------------------------- erase


def test_mass_erase_leaves_every_byte_0xff(shell, tmp_path):
    old = tmp_path / "old.bin"
    old.write_bytes(bytes(range(256)) * 256)
    sh = shell(f"{BLUE_PILL}&image={old}")
    result = sh.ok("mass_erase")
    assert result["method"] == "chip erase"
    assert erases(sh.sim) == [(ERASE, "mass")]
    assert sh.sim.flash[:SIZE] == b"\xff" * SIZE


def test_erase_rounds_out_to_pages_and_shows_them_first(shell, tmp_path, monkeypatch):
    old = tmp_path / "old.bin"
    old.write_bytes(b"\x00" * 0x10000)
    sh = shell(f"{BLUE_PILL}&image={old}")
    questions: list[str] = []
    monkeypatch.setattr(sh.shell, "confirm", lambda q: questions.append(q) or True)
    result = sh.ok("erase 0x08000500 0x400")
    assert questions == ["erase 0x08000400-0x08000bff (whole pages)?"]
    assert (result["start"], result["end"], result["method"]) == (
        0x08000400,
        0x08000C00,
        "page erase",
    )
    assert erases(sh.sim) == [(ERASE, [1, 2])]
    flash = sh.sim.flash[:SIZE]
    assert flash[0x400:0xC00] == b"\xff" * 0x800
    assert flash[:0x400] == b"\x00" * 0x400 and flash[0xC00:] == b"\x00" * (SIZE - 0xC00)


# ---------------------------------------------------------------------- protection


def test_readout_protection_round_trip_behaves_as_the_chip(shell, tmp_path):
    path, data = image(tmp_path, 2048, seed=9)
    sh = shell(BLUE_PILL)
    sh.ok(f"program {path} verify")
    result = sh.ok("protect readout")
    assert result["readout_protection"] == 1
    assert sh.sim.memory.rdp_level == 1
    # The chip reset; flashsh synchronised again and sees the protection.
    assert sh.ok("info")["details"]["readout_protection"].startswith("1 ")
    assert sh.ok("options read")["readout_protection"] == 1
    error = sh.error("read_bank flash out.bin")
    assert "read-out protected" in error and "`unprotect readout`" in error
    assert sh.sim.flash[:2048] == data  # protection hides the data, does not erase it
    assert "already on" in sh.error("protect readout")
    result = sh.ok("unprotect readout")
    assert result["readout_protection"] == 0
    assert sh.sim.flash == b"\xff" * len(sh.sim.flash)  # lifting it erased everything
    sh.ok(f"program {path} verify")


def test_write_protection_refuses_before_anything_is_erased(shell, tmp_path):
    path, data = image(tmp_path, 2048, seed=10)
    sh = shell(BLUE_PILL)
    sh.ok(f"program {path} verify")
    result = sh.ok("protect write 0x08000000 0x1000")
    assert result["write_protected"] == "0x08000000-0x08000fff"
    assert sh.sim.memory.protected_units() == [0, 1, 2, 3]
    options = sh.ok("options read")
    assert options["write_protected_sectors"] == [0]
    # A second range keeps the first (Write Protect replaces the whole set).
    sh.ok("protect write 0x08008000 16")
    assert sh.ok("options read")["write_protected_sectors"] == [0, 8]
    history = len(sh.sim.rom.history)
    error = sh.error(f"program {path} verify")
    assert "write-protected" in error and "`unprotect write`" in error
    assert "mass_erase" not in error
    assert "write-protected" in sh.error("mass_erase")
    assert erases(sh.sim)[-1:] == [(ERASE, [0, 1])]  # from the first program only
    assert not [h for h in sh.sim.rom.history[history:] if h[0] in (ERASE, WRITE)]
    sh.ok("unprotect write")
    assert sh.sim.memory.protected_units() == []
    sh.ok(f"program {path} verify")


def test_protection_commands_ask_before_destroying_data(shell, monkeypatch):
    sh = shell(f"{BLUE_PILL}&rdp=1")
    questions: list[str] = []
    monkeypatch.setattr(sh.shell, "confirm", lambda q: questions.append(q) or False)
    assert "nothing erased" in sh.error("unprotect readout")
    # Under protection the flash-size register is hidden: the PID group's 128 KiB.
    assert "ERASES ALL OF FLASH (0x08000000-0x0801ffff)" in questions[0]
    assert sh.sim.memory.rdp_level == 1
    sh = shell(BLUE_PILL)
    monkeypatch.setattr(sh.shell, "confirm", lambda q: questions.append(q) or False)
    assert "not protected" in sh.error("protect readout")
    assert sh.sim.memory.rdp_level == 0


def test_lifting_protection_that_is_not_there_sends_nothing(shell, tmp_path, monkeypatch):
    path, data = image(tmp_path, 1024)
    sh = shell(BLUE_PILL)
    sh.ok(f"program {path}")
    monkeypatch.setattr(sh.shell, "confirm", lambda q: pytest.fail(f"asked {q!r}"))
    history = len(sh.sim.rom.history)
    for kind in ("readout", "write"):
        result = sh.ok(f"unprotect {kind}")
        assert result["changed"] is False
    # Only reads: no Readout Unprotect (which would erase), no Write Unprotect (a reset).
    assert {h[0] for h in sh.sim.rom.history[history:]} <= {READ}
    assert sh.sim.flash[:1024] == data


# ---------------------------------------------------------------------- bad inputs


def one_line(error: str) -> str:
    assert "\n" not in error
    return error


def test_no_answer_names_the_likely_causes():
    sh = Driver(protocol="stm32")
    try:
        error = one_line(sh.error(f"connect 'sim://stm32?chip=stm32f103c8&{FAST}&fault=dead'"))
    finally:
        sh.close()
    assert error.startswith("no bootloader answered on sim://stm32")
    for cause in ("BOOT0", "even parity", "TX and RX", "wrong port"):
        assert cause in error


def test_a_nack_stops_the_job_with_one_line(shell, tmp_path):
    old = tmp_path / "old.bin"
    old.write_bytes(b"\x5a" * 0x10000)
    # Commands 1-5 connect (Get Version, Get, Get ID, two reads); 6 is the erase.
    sh = shell(f"{BLUE_PILL}&image={old}&fault=nack:6")
    path, _ = image(tmp_path, 1000)
    error = one_line(sh.error(f"program {path} verify"))
    # Not blamed on read-out protection: a second Read Memory showed there is none.
    assert error.startswith("the ROM refused erasing at 0x08000000 (Erase, command stage)")
    assert "garbled" in error
    assert sh.sim.flash[:SIZE] == old.read_bytes()  # nothing erased, nothing written


@pytest.mark.parametrize(
    ("size", "where", "complaint"),
    [
        (70 * 1024, "", "larger than the flash"),
        (8192, "0x0800f000", "beyond the chip's flash at 0x08010000"),
        (256, "0x07fff000", "is below the chip's flash"),
    ],
)
def test_images_that_do_not_fit_touch_nothing(shell, tmp_path, size, where, complaint):
    path, _ = image(tmp_path, size)
    sh = shell(BLUE_PILL)
    error = one_line(sh.error(f"program {path} {where} verify"))
    assert complaint in error
    assert erases(sh.sim) == [] and writes(sh.sim) == []


def test_a_protected_chip_refuses_with_one_line_and_keeps_its_flash(shell, tmp_path):
    old = tmp_path / "old.bin"
    old.write_bytes(b"\xa5" * 0x10000)
    sh = shell(f"{BLUE_PILL}&image={old}&rdp=1")
    assert sh.ok("info")["details"]["flash_size"].startswith("128 KiB (from the chip data")
    path, _ = image(tmp_path, 1000)
    error = one_line(sh.error(f"program {path} verify"))
    assert "read-out protected" in error and "erases the whole flash" in error
    assert "read-out protected" in one_line(sh.error("mass_erase"))
    assert "read-out protected" in one_line(sh.error("go 0x08000000"))
    assert sh.sim.flash[:SIZE] == old.read_bytes()


def test_the_avr_bootloaders_say_plainly_they_have_no_such_things(shell):
    sh = shell(f"sim://stk500v1?chip=atmega328p&{FAST}", protocol="auto")
    assert one_line(sh.error("options read")) == "stk500v1 has no option bytes to read"
    assert "cannot change protection" in sh.error("unprotect readout")
    assert "cannot jump to an address" in sh.error("go 0")


def test_option_bytes_and_the_rom_cannot_be_written_directly(shell):
    sh = shell(BLUE_PILL)
    assert one_line(sh.error("write options 0x1ffff800 0x00")).startswith(
        "options is read-only here"
    )
    assert "system is read-only" in sh.error("write system 0x1ffff000 0x00")
    assert writes(sh.sim) == [] and sh.sim.memory.rdp_level == 0


def test_chip_given_with_another_product_id_is_refused():
    with open_serial(BLUE_PILL, 115200) as link, pytest.raises(FlashshError) as err:
        Stm32Uart.probe(link, reset=False, chip="stm32f407vg")
    assert "has product ID 0x413, but the ROM reports 0x410" in str(err.value)


def test_a_byte_that_is_not_ack_is_not_a_rom():
    # Something answering 0x7F with 0x79 but then not speaking AN3155 is left alone.
    link = ScriptedLink(b"\x79", b"\x79\x00")
    assert Stm32Uart.probe(link, reset=False) is None
