"""Each memory command end to end on the simulated optiboot / ATmegaBOOT boards."""

from __future__ import annotations

import random
import time

from shelldriver import FAST

from flashsh.images import save_image

UNO = f"sim://stk500v1?chip=atmega328p&{FAST}"


def random_bytes(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def test_program_hex_and_verify(shell, tmp_path):
    image = random_bytes(1, 3000)
    path = tmp_path / "app.hex"
    save_image(path, 0, image)
    sh = shell(UNO)
    result = sh.ok(f"program {path} verify")
    assert result["pages_written"] == 24 and result["verified"] is True
    flash = sh.sim.flash
    assert flash[:3000] == image
    # The tail of the last page is padded with 0xFF, as avrdude does.
    assert flash[3000:3072] == b"\xff" * 72
    assert sh.ok(f"verify_image {path}")["match"] is True


def test_program_bin_with_words_in_any_order(shell, tmp_path):
    path = tmp_path / "app.bin"
    path.write_bytes(b"\x11\x22\x33\x44")
    sh = shell(UNO)
    sh.ok(f"program {path} verify 0x100")
    assert sh.sim.flash[0x100:0x104] == b"\x11\x22\x33\x44"
    assert sh.sim.flash[0xFC:0x100] == b"\xff" * 4
    assert "two addresses" in sh.error(f"program {path} 0x100 0x200")
    assert "does not understand 'verfy'" in sh.error(f"program {path} verfy")


def test_diff_writes_only_the_pages_that_differ(shell, tmp_path):
    image = bytearray(random_bytes(2, 4096))
    path = tmp_path / "app.bin"
    path.write_bytes(image)
    sh = shell(UNO)
    sh.ok(f"program {path}")
    image[5] ^= 1
    image[4000] ^= 1
    path.write_bytes(image)
    result = sh.ok(f"program {path} diff verify")
    assert (result["pages_written"], result["pages_unchanged"]) == (2, 30)
    assert sh.sim.flash[:4096] == bytes(image)


def test_verify_image_names_the_first_difference(shell, tmp_path):
    image = bytearray(random_bytes(3, 512))
    path = tmp_path / "app.bin"
    path.write_bytes(image)
    sh = shell(UNO)
    sh.ok(f"program {path}")
    image[300] ^= 0xFF
    path.write_bytes(image)
    error = sh.error(f"verify_image {path}")
    assert "differs from the chip at 0x012c" in error


def test_read_bank_by_name_and_bank_number(shell, tmp_path):
    sh = shell(UNO)
    image = random_bytes(4, 256)
    path = tmp_path / "app.bin"
    path.write_bytes(image)
    sh.ok(f"program {path}")
    sh.ok(f"read_bank 0 {tmp_path / 'part.bin'} 0x80 0x40")
    assert (tmp_path / "part.bin").read_bytes() == image[0x80:0xC0]
    whole = tmp_path / "whole.hex"
    result = sh.ok(f"read_bank flash {whole}")
    assert result["bytes"] == 0x8000
    from flashsh.images import load_image

    dumped = load_image(whole)
    assert dumped.data_at(0, 0x8000) == sh.sim.flash
    assert "no memory region 'sram'" in sh.error(f"read_bank sram {tmp_path / 'x.bin'}")


def test_dump_is_a_hexdump(shell):
    sh = shell(UNO)
    result = sh.ok("dump flash 0x7e00 32")
    assert bytes.fromhex(result["data"]) == sh.sim.flash[0x7E00:0x7E20]


def test_write_patches_bytes_and_keeps_the_rest_of_the_page(shell, tmp_path):
    image = random_bytes(5, 128)
    path = tmp_path / "app.bin"
    path.write_bytes(image)
    sh = shell(UNO)
    sh.ok(f"program {path}")
    sh.ok("write flash 0x10 0xaa 0xbb")
    expected = bytearray(image)
    expected[0x10:0x12] = b"\xaa\xbb"
    assert sh.sim.flash[:128] == bytes(expected)
    assert "inside the bootloader" in sh.error("write flash 0x7e00 0")
    assert "bad arguments for `write`" in sh.error("write flash 0 0x100")


def test_mass_erase_blanks_the_application_but_not_the_bootloader(shell, tmp_path):
    path = tmp_path / "app.bin"
    path.write_bytes(random_bytes(6, 1024))
    sh = shell(UNO)
    boot = sh.sim.flash[0x7E00:]
    sh.ok(f"program {path}")
    result = sh.ok("mass_erase")
    assert result["method"].startswith("0xFF written")
    assert (result["start"], result["end"]) == (0, 0x7E00)
    assert sh.sim.flash[:0x7E00] == b"\xff" * 0x7E00
    assert sh.sim.flash[0x7E00:] == boot


def test_erase_rounds_to_pages_and_refuses_the_bootloader(shell, tmp_path):
    path = tmp_path / "app.bin"
    path.write_bytes(random_bytes(7, 1024))
    sh = shell(UNO)
    sh.ok(f"program {path}")
    result = sh.ok("erase 0x90 0x10")
    assert (result["start"], result["end"]) == (0x80, 0x100)
    flash = sh.sim.flash
    assert flash[0x80:0x100] == b"\xff" * 0x80
    assert flash[:0x80] == path.read_bytes()[:0x80]
    assert "overlaps the bootloader" in sh.error("erase 0x7d00 0x200")


def test_optiboot_refuses_eeprom_and_atmegaboot_serves_it(shell):
    uno = shell(UNO)
    assert "no memory region 'eeprom'" in uno.error("dump eeprom 0 16")
    mega = shell(f"sim://stk500v1?chip=atmega1280&bootloader=atmegaboot&{FAST}")
    mega.ok("write eeprom 0x20 1 2 3 4")
    assert mega.sim.eeprom[0x20:0x24] == b"\x01\x02\x03\x04"
    assert bytes.fromhex(mega.ok("dump eeprom 0x20 4")["data"]) == b"\x01\x02\x03\x04"


def test_images_that_do_not_fit_are_refused_before_anything_is_written(shell, tmp_path):
    sh = shell(UNO)
    before = sh.sim.flash
    over = tmp_path / "over.bin"
    over.write_bytes(b"\x01" * (0x7E00 + 1))
    assert "bootloader" in sh.error(f"program {over}")
    huge = tmp_path / "huge.bin"
    huge.write_bytes(b"\x01" * 0x9000)
    error = sh.error(f"program {huge}")
    assert "0x9000" in error or "36864" in error or "36 KiB" in error, error
    bad = tmp_path / "bad.hex"
    bad.write_text(":0400000001020304F2\n:0400040005060708DD\n:00000001FF\n")
    error = sh.error(f"program {bad}")
    assert "line 2" in error and "checksum" in error
    assert sh.sim.flash == before


def test_flash_above_64k_on_1284p_and_above_128k_on_2560(shell, tmp_path):
    image = random_bytes(8, 512)
    path = tmp_path / "high.bin"
    path.write_bytes(image)
    melzi = shell(f"sim://stk500v1?chip=atmega1284p&{FAST}")
    melzi.ok(f"program {path} 0x10f00 verify")
    assert melzi.sim.flash[0x10F00:0x11100] == image
    mega = shell(f"sim://stk500v1?chip=atmega2560&{FAST}")
    mega.ok(f"program {path} 0x1ff00 verify")  # crosses the 128 KiB boundary
    assert mega.sim.flash[0x1FF00:0x20100] == image
    assert mega.sim.flash[0xFF00:0x10100] == b"\xff" * 0x200


def test_session_survives_idle_time_and_reset(shell):
    sh = shell(UNO)
    time.sleep(2.5)  # optiboot's watchdog would have fired twice
    sh.ok("info")
    assert sh.shell.session.reconnects == 0
    sh.ok("reset")
    assert sh.sim.mcu.wait_for_state("application")
    sh.ok("dump flash 0 16")  # reconnects through a DTR reset
    assert sh.shell.session.reconnects == 1


def test_region_completion_offers_the_connected_targets_regions(shell):
    from flashsh.commands.memory import region_choices

    mega = shell(f"sim://stk500v1?chip=atmega1280&bootloader=atmegaboot&{FAST}")
    offered = {item.text for item in region_choices(mega.shell).items}
    assert offered == {"flash", "0", "eeprom", "1"}
    uno = shell(UNO)
    assert {item.text for item in region_choices(uno.shell).items} == {"flash", "0"}
