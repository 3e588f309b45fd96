"""check_fits: size, placement and the bootloader, from a MemoryMap alone."""

from __future__ import annotations

import pytest

from flashsh.errors import ImageError
from flashsh.images import Image, check_fits
from flashsh.protocols.base import MemoryMap, Region

# An ATmega328P with optiboot in the top 512 bytes.
OPTIBOOT_328P = MemoryMap(
    regions=(
        Region("flash", 0x0000, 0x8000, page_size=128, erase_size=128),
        Region("eeprom", 0x0000, 1024, page_size=4, erase_size=4, bank=1),
    ),
    bootloader=(0x7E00, 0x8000),
    app_start=0x0000,
)
# An STM32F103 with Katapult in the first 8 KiB.
KATAPULT_F103 = MemoryMap(
    regions=(Region("flash", 0x08000000, 0x20000, page_size=1024, erase_size=1024),),
    bootloader=(0x08000000, 0x08002000),
    app_start=0x08002000,
)


def fit_error(image: Image, memory_map: MemoryMap, **kwargs: bool) -> ImageError:
    with pytest.raises(ImageError) as err:
        check_fits(image, memory_map, **kwargs)
    return err.value


def test_application_up_to_the_bootloader_fits() -> None:
    check_fits(Image([(0, bytes(0x7E00))], source="blink.hex"), OPTIBOOT_328P)
    check_fits(Image([(0x08002000, bytes(0x1E000))], source="k.bin"), KATAPULT_F103)


def test_larger_than_flash() -> None:
    error = fit_error(Image([(0, bytes(0x9000))], source="mega.hex"), OPTIBOOT_328P)
    assert error.message == (
        "mega.hex is larger than the flash: 36 KiB of data, the flash holds 32 KiB"
    )
    assert error.hint == "check that it was built for this chip"


def test_data_beyond_flash_names_the_first_address_past_the_end() -> None:
    image = Image([(0x1000, b"code"), (0x8010, b"x")], source="odd.hex", format="hex")
    assert fit_error(image, OPTIBOOT_328P).message == (
        "odd.hex: data beyond the chip's flash at 0x8010 (flash ends at 0x7fff)"
    )


def test_segment_running_over_the_end() -> None:
    image = Image([(0x7FF0, bytes(0x20))], source="dump.bin", format="bin")
    error = fit_error(image, OPTIBOOT_328P, allow_bootloader=True)
    assert (
        error.message == "dump.bin: data beyond the chip's flash at 0x8000 (flash ends at 0x7fff)"
    )
    assert error.hint == "check the address given"


def test_data_inside_a_bootloader_at_the_top() -> None:
    image = Image([(0, bytes(0x7E10))], source="blink.with_bootloader.hex", format="hex")
    error = fit_error(image, OPTIBOOT_328P)
    assert error.message == (
        "blink.with_bootloader.hex: data at 0x7e00 is inside the bootloader (0x7e00-0x7fff); "
        "the application must end below 0x7e00"
    )
    assert "not a file that includes the bootloader" in (error.hint or "")


def test_bootloader_check_can_be_skipped_for_verify() -> None:
    full_dump = Image([(0, bytes(0x8000))], source="dump.bin", format="bin")
    check_fits(full_dump, OPTIBOOT_328P, allow_bootloader=True)


def test_data_inside_a_bootloader_at_the_bottom() -> None:
    image = Image([(0x08000000, bytes(64))], source="klipper.bin", format="bin")
    error = fit_error(image, KATAPULT_F103)
    assert error.message == (
        "klipper.bin: data at 0x08000000 is inside the bootloader (0x08000000-0x08001fff); "
        "the application must start at 0x08002000 or above"
    )
    assert error.hint == "leave out the address and it goes to 0x08002000"


def test_elf_built_for_the_wrong_offset() -> None:
    image = Image([(0x08001F00, bytes(0x200))], source="klipper.elf", format="elf")
    error = fit_error(image, KATAPULT_F103)
    assert error.message.startswith("klipper.elf: data at 0x08001f00 is inside the bootloader")
    assert error.hint == "build the firmware for the bootloader's offset"


def test_below_flash() -> None:
    image = Image([(0, bytes(16))], source="klipper.bin", format="bin")
    error = fit_error(image, KATAPULT_F103)
    assert error.message == (
        "klipper.bin: data at 0x0000 is below the chip's flash (flash starts at 0x08000000)"
    )
    assert error.hint == "give the address, e.g. 0x08002000"


def test_no_bootloader_means_all_of_flash() -> None:
    bare = MemoryMap(regions=OPTIBOOT_328P.regions)
    check_fits(Image([(0, bytes(0x8000))], source="all.bin"), bare)


def test_eeprom_image_is_checked_against_eeprom() -> None:
    check_fits(Image([(0, bytes(1024))], source="a.elf", region="eeprom"), OPTIBOOT_328P)
    error = fit_error(Image([(0x3F0, bytes(32))], source="a.elf", region="eeprom"), OPTIBOOT_328P)
    assert error.message == "a.elf: data beyond the chip's eeprom at 0x0400 (eeprom ends at 0x03ff)"


def test_region_the_target_lacks() -> None:
    image = Image([(0, b"\x01")], source="a.elf", region="eeprom")
    error = fit_error(image, KATAPULT_F103)
    assert error.message == "a.elf holds eeprom data, but this target has no eeprom"
    assert error.hint == "regions: 0=flash"
