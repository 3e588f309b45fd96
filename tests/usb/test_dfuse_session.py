"""flashsh's DfuSe client against the simulated STM32 ROM, through Session and
flashsh.operations as the commands use them."""

from __future__ import annotations

import dataclasses
import random
import struct

import pytest

from flashsh import operations
from flashsh.chips.dfuse import simulated_chip
from flashsh.errors import FlashshError, ImageError, ProtocolError, TargetError
from flashsh.images import Image
from flashsh.protocols import usb_session_for
from flashsh.protocols.base import Capability
from flashsh.protocols.dfuse import DfuSe
from flashsh.session import Session
from flashsh.sims.dfuse import DfuSeRom
from flashsh.sims.usb_bus import SimUsbBackend, SimUsbBus, make_device
from flashsh.transports.usb import DeviceGone, open_usb

FLASH = 0x08000000


def connect(url: str) -> tuple[Session, DfuSeRom, SimUsbBus]:
    bus = SimUsbBus()
    sim = make_device(url)
    bus.plug(sim)
    return open_session(bus), sim, bus


def open_session(bus: SimUsbBus) -> Session:
    link = open_usb("usb:0483:df11", backend=SimUsbBackend(bus))
    return Session(usb_session_for(link))


def app_image(size: int, address: int = FLASH, seed: int = 1) -> Image:
    """A vector table (stack in RAM, reset vector in flash) and random code."""
    body = random.Random(seed).randbytes(size - 8)
    data = struct.pack("<II", 0x20004000, address + 0x101) + body
    return Image([(address, data)], source="app.bin", format="bin")


def addresses_set(sim: DfuSeRom) -> list[int]:
    return [int(e[1]) for e in sim.executed if e[0] == "address"]


def test_program_and_verify_write_the_image_and_erase_only_its_pages():
    session, sim, _ = connect("sim://dfuse?chip=stm32f072&throttle=0")
    image = app_image(20 * 1024 + 100)
    result = operations.program(session, image, verify=True)
    assert result["pages_written"] == 11 and result["verified"]
    assert sim.flash[: image.size] == image.segments[0].data
    assert sim.flash[image.size : 22 * 1024] == b"\xff" * (22 * 1024 - image.size)
    assert sim.memory.stats.erased == list(range(11))
    assert result["erased"] == "0x08000000-0x080057ff"


def test_f4_sectors_are_erased_only_where_the_image_lies():
    session, sim, _ = connect("sim://dfuse?chip=stm32f407&throttle=0")
    sim.memory.load([(FLASH + 0x8000, b"\x00" * 16)])  # sector 2: must survive
    operations.program(session, app_image(20 * 1024), verify=True)
    assert sim.memory.stats.erased == [0, 1]
    assert [e[1] for e in sim.executed if e[0] == "erase"] == [0x08000000, 0x08004000]
    assert sim.flash[0x8000:0x8010] == b"\x00" * 16


def test_one_address_pointer_serves_a_whole_program_and_verify(monkeypatch):
    session, sim, _ = connect("sim://dfuse?chip=stm32f072&throttle=0")
    sim.executed.clear()
    operations.program(session, app_image(16 * 1024), verify=True)
    assert addresses_set(sim) == [FLASH]
    writes = [e for e in sim.executed if e[0] == "write"]
    assert [e[1] for e in writes] == [FLASH + n * 2048 for n in range(8)]

    # dfu-util's way, one pointer a block, reaches the same flash with 16 more commands.
    monkeypatch.setattr(DfuSe, "use_block_numbers", False)
    session2, sim2, _ = connect("sim://dfuse?chip=stm32f072&throttle=0")
    sim2.executed.clear()
    operations.program(session2, app_image(16 * 1024), verify=True)
    assert len(addresses_set(sim2)) == 16
    assert sim2.flash == sim.flash


def test_read_bank_reads_any_span_of_flash_and_the_option_bytes():
    session, sim, _ = connect("sim://dfuse?chip=stm32f407&throttle=0")
    sim.memory.load([(FLASH, random.Random(5).randbytes(10_000))])
    flash = session.memory_map.flash
    assert operations.read_memory(session, flash, FLASH + 3, 5000) == sim.flash[3:5003]
    assert operations.read_memory(session, flash, FLASH + 9, 1) == sim.flash[9:10]
    options = session.memory_map.region("options")
    assert operations.read_memory(session, options, options.start, 16) == bytes(sim.memory.option)


def test_options_read_decodes_the_f4_option_bytes():
    session, _, _ = connect("sim://dfuse?chip=stm32f407&throttle=0")
    with session.use() as bootloader:
        decoded = bootloader.read_options()
    assert decoded["readout_protection"] == 0
    assert decoded["write_protected"] == "none"


def test_mass_erase_and_a_range_erase():
    session, sim, _ = connect("sim://dfuse?chip=stm32f407&throttle=0")
    sim.memory.load([(FLASH, b"\x00" * 0x30000)])
    result = operations.erase(session, FLASH + 0x4000, 100)
    assert (result["start"], result["end"]) == (FLASH + 0x4000, FLASH + 0x8000)
    assert sim.memory.stats.erased == [1]
    assert sim.flash[0x3FFF] == 0 and sim.flash[0x8000] == 0
    assert operations.erase(session)["method"] == "chip erase"
    assert ("mass_erase",) in sim.executed
    assert sim.flash == b"\xff" * len(sim.flash)


def test_reset_leaves_to_the_application_start_and_follows_the_rom_back():
    session, sim, _ = connect("sim://dfuse?chip=stm32f072&throttle=0&app=rom")
    operations.program(session, app_image(4096), verify=True)
    session.start_application()
    assert sim.jumped_to == FLASH
    assert ("leave", FLASH) in sim.executed
    # The board came back (app=rom): the session continues on a fresh connection.
    assert session.in_bootloader and sim.boots == 2
    assert operations.read_memory(session, session.memory_map.flash, FLASH, 8) == sim.flash[:8]


def test_reset_into_klipper_continues_on_the_application():
    session, sim, _ = connect("sim://dfuse?chip=stm32f072&throttle=0&app=klipper")
    operations.program(session, app_image(4096))
    session.start_application()
    assert sim.jumped_to == FLASH
    assert session.info.protocol == "usb-application"
    with pytest.raises(FlashshError, match="not a bootloader"):
        session.memory_map  # noqa: B018


def test_go_jumps_where_asked_and_reset_then_uses_that_address():
    session, sim, _ = connect("sim://dfuse?chip=stm32f407&throttle=0&app=rom")
    operations.program(session, app_image(4096, FLASH + 0x4000), verify=True)
    with session.use() as bootloader:
        bootloader.go(FLASH + 0x4000)
        session.in_bootloader = False
    assert sim.jumped_to == FLASH + 0x4000
    # The next command finds the ROM again (app=rom); reset then leaves to the same place.
    assert operations.read_memory(session, session.memory_map.flash, FLASH, 4) == b"\xff" * 4
    assert session.reconnects == 1
    session.start_application()
    assert [e[1] for e in sim.executed if e[0] == "leave"] == [FLASH + 0x4000] * 2


def test_a_jump_outside_every_memory_is_address_not_allowed():
    session, _, _ = connect("sim://dfuse?throttle=0")
    refused = pytest.raises(TargetError, match=r"0x30000000: address not allowed \(errTARGET\)")
    with refused, session.use() as bootloader:
        bootloader.go(0x30000000)


def test_the_errfirmware_greeting_is_cleared_and_reported():
    session, sim, _ = connect("sim://dfuse?chip=stm32f072&throttle=0&greet=error")
    assert "errFIRMWARE" in str(session.info.details["greeting"])
    operations.program(session, app_image(2048), verify=True)


def test_read_protection_gives_one_line_with_the_way_out():
    session, sim, _ = connect("sim://dfuse?chip=stm32f072&throttle=0&rdp=1")
    assert session.info.details["readout_protection"] == "on"
    before = sim.traffic.control
    with pytest.raises(TargetError) as caught:
        operations.program(session, app_image(2048))
    assert str(caught.value) == (
        "read-out protection is on: the ROM refuses to erase or write flash "
        "(`unprotect readout` erases the chip to remove it)"
    )
    assert sim.traffic.control == before  # refused before anything was sent
    # What the ROM itself answers (errVENDOR) reads the same way.
    with pytest.raises(TargetError) as caught:
        operations.read_memory(session, session.memory_map.flash, FLASH, 16)
    assert str(caught.value) == (
        "reading flash at 0x08000000: read-out protection is on "
        "(`unprotect readout` erases the chip to remove it)"
    )
    with session.use() as bootloader:
        assert bootloader.read_options()["readout_protection"] == 1


def test_unprotect_erases_the_chip_and_the_session_follows_the_reset():
    session, sim, bus = connect("sim://dfuse?chip=stm32f072&throttle=0&rdp=1")
    sim.memory.load([(FLASH, b"\x42" * 4096)])
    with session.use() as bootloader:
        result = bootloader.set_protection("readout", False)
    assert result == {"kind": "readout", "enabled": False, "changed": True,
                      "readout_protection": 0}  # fmt: skip
    assert sim.memory.rdp_level == 0 and sim.flash[:4096] == b"\xff" * 4096
    assert sim.boots == 2
    operations.program(session, app_image(2048), verify=True)
    with session.use() as bootloader:
        again = bootloader.set_protection("readout", False)
    assert again["changed"] is False and sim.boots == 2


def test_protections_the_rom_cannot_set_are_refused():
    session, _, _ = connect("sim://dfuse?throttle=0")
    with session.use() as bootloader, pytest.raises(FlashshError, match="only has Read Unpro"):
        bootloader.set_protection("readout", True)


def test_an_image_past_the_end_of_flash_is_refused_before_any_traffic():
    session, sim, _ = connect("sim://dfuse?chip=stm32f072&throttle=0")
    before = sim.traffic.control
    with pytest.raises(ImageError):
        operations.program(session, app_image(4096, FLASH + 126 * 1024))
    assert sim.traffic.control == before


@pytest.mark.parametrize(
    ("fault", "error", "message"),
    [
        ("stall", ProtocolError, "stall"),
        ("timeout", ProtocolError, "did not answer"),
        ("vanish", DeviceGone, "is gone from the USB bus"),
    ],
)
def test_a_fault_mid_program_says_what_was_written(fault, error, message):
    session, sim, _ = connect("sim://dfuse?chip=stm32f072&throttle=0")
    # Count the requests of a clean run to aim the fault at the 4th page's DNLOAD.
    dry, dry_sim, _ = connect("sim://dfuse?chip=stm32f072&throttle=0")
    operations.program(dry, app_image(8192))
    target = _request_of_write(dry_sim, 3)
    sim.faults.at[target] = fault
    with pytest.raises(error) as caught:
        operations.program(session, app_image(8192))
    text = str(caught.value)
    assert message in text and "\n" not in text
    assert "writing 0x08001800 failed" in text
    assert "written before that: 0x08000000-0x080017ff" in text


def _request_of_write(sim: DfuSeRom, index: int) -> int:
    """The DFU request number (as faults count them) of the DNLOAD of the ``index``th
    page written, counting from 0."""
    writes = [n for n, (kind, block, length) in enumerate(sim.requests, 1)
              if kind == "DNLOAD" and block >= 2 and length]  # fmt: skip
    return writes[index]


def test_writing_over_flash_that_was_not_erased_is_explained():
    session, sim, _ = connect("sim://dfuse?chip=stm32f072&throttle=0")
    sim.memory.load([(FLASH, b"\x00" * 2048)])
    flash = session.memory_map.flash
    refused = pytest.raises(TargetError, match="may not be erased")
    with refused as caught, session.use() as bootloader:
        bootloader.write_page(flash, FLASH, b"\x55" * 2048)
    assert "errPROG" in str(caught.value)
    operations.program(session, app_image(2048), verify=True)  # the ROM is usable again


def test_poll_times_are_honoured():
    # A chip that stalls every request while it works would show any early poll.
    session, sim, _ = connect("sim://dfuse?chip=stm32f072&throttle=1&busy=stall")
    operations.program(session, app_image(4096), verify=True)
    assert sim.stalled_while_busy == 0


def test_a_mass_erase_reporting_100_ms_is_waited_for():
    # The F405's lie, on a ROM that stalls while erasing: early polls are refused until
    # the erase is really done, and flashsh keeps asking.
    session, sim, _ = connect(
        "sim://dfuse?chip=stm32f407&throttle=1&busy=stall&erase_lie=1&mass_erase_ms=600"
    )
    operations.erase(session)
    assert ("mass_erase",) in sim.executed and sim.stalled_while_busy > 0
    assert session.in_bootloader


def test_a_layout_string_with_a_wrong_length_byte_is_read_whole():
    session, _, _ = connect("sim://dfuse?throttle=0&bad_length=1")
    assert session.memory_map.flash.size == 1024 * 1024
    assert "notes" not in " ".join(session.info.details)


def test_a_bootloader_listed_read_only_is_never_erased():
    bus = SimUsbBus()
    chip = dataclasses.replace(
        simulated_chip("stm32f407"),
        alts=("@Internal Flash   /0x08000000/03*016Ka,01*016Kg,01*064Kg,07*128Kg",),
    )
    sim = DfuSeRom(chip)
    sim.memory.load([(FLASH, b"\x00" * 0xC000)])
    bus.plug(sim)
    session = open_session(bus)
    memory = session.memory_map
    assert memory.bootloader == (FLASH, FLASH + 0xC000) and memory.app_start == FLASH + 0xC000
    assert Capability.CHIP_ERASE not in session.capabilities
    result = operations.erase(session)
    assert result["method"] == "sector erase" and sim.memory.stats.erased == list(range(3, 12))
    assert sim.flash[:0xC000] == b"\x00" * 0xC000


def test_chip_option_picks_among_chips_with_the_same_flash_and_refuses_others():
    bus = SimUsbBus()
    bus.plug(make_device("sim://dfuse?chip=stm32f411&throttle=0"))
    link = open_usb("usb:0483:df11", backend=SimUsbBackend(bus))
    assert usb_session_for(link).identify().chip == "STM32F401xD/E, F411xE or F446"
    link = open_usb("usb:0483:df11", backend=SimUsbBackend(bus))
    named = usb_session_for(link, chip="stm32f411").identify()
    assert named.chip == "STM32F401xD/E, F411xE or F446" and "--chip" in named.how
    link = open_usb("usb:0483:df11", backend=SimUsbBackend(bus))
    with pytest.raises(TargetError, match="--chip stm32f072: .* has other flash"):
        usb_session_for(link, chip="stm32f072")
