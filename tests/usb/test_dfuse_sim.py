"""The simulated STM32 ROM DFU device on the wire, through pyusb: descriptors as dfu.md §5
gives them, and the machine of stm32-testing.md §2.1."""

from __future__ import annotations

import struct

import pytest
import usb.util

from flashsh.errors import ProtocolError
from flashsh.protocols.dfu_wire import DfuRequests, Functional, State, Status
from flashsh.sims.dfuse import DfuSeRom
from flashsh.sims.usb_bus import SimUsbBackend, SimUsbBus, make_device
from flashsh.transports.usb import DeviceGone, open_usb

F407_ALTS = [
    "@Internal Flash  /0x08000000/04*016Kg,01*064Kg,07*128Kg",
    "@Option Bytes  /0x1FFFC000/01*016 g",
    "@OTP Memory /0x1FFF7800/01*512 g,01*016 g",
    "@Device Feature/0xFFFF0000/01*004 g",
]


def plug(url: str) -> tuple[DfuSeRom, DfuRequests, SimUsbBus]:
    bus = SimUsbBus()
    sim = make_device(url)
    bus.plug(sim)
    link = open_usb("usb:0483:df11", backend=SimUsbBackend(bus))
    link.claim(0, 0)
    return sim, DfuRequests(link), bus


def set_address(dfu: DfuRequests, address: int) -> None:
    dfu.dnload(0, struct.pack("<BI", 0x21, address))
    assert dfu.get_status().state == State.DNBUSY
    assert dfu.get_status().state == State.DNLOAD_IDLE


def test_descriptors_are_the_roms():
    sim, dfu, _ = plug("sim://dfuse?throttle=0")
    device = dfu.link.device
    assert (device.idVendor, device.idProduct, device.bcdDevice) == (0x0483, 0xDF11, 0x2100)
    assert usb.util.get_string(device, device.iProduct) == "STM32  BOOTLOADER"
    config = device[0]
    assert config.bmAttributes == 0xC0
    settings = list(config)
    assert [(i.bInterfaceClass, i.bInterfaceSubClass, i.bInterfaceProtocol) for i in settings] == [
        (0xFE, 0x01, 0x02)
    ] * 4
    assert all(i.bNumEndpoints == 0 for i in settings)
    assert [usb.util.get_string(device, i.iInterface) for i in settings] == F407_ALTS
    # The functional descriptor follows the last interface descriptor.
    assert [bytes(i.extra_descriptors) for i in settings[:-1]] == [b""] * 3
    assert bytes(settings[-1].extra_descriptors) == Functional(0x0B, 255, 2048, 0x011A).pack()
    assert bytes(settings[-1].extra_descriptors).hex() == "09210bff0000081a01"


def test_commands_run_on_the_next_getstatus():
    sim, dfu, _ = plug("sim://dfuse?throttle=0")
    dfu.dnload(0, struct.pack("<BI", 0x21, 0x08004000))
    assert sim.pointer == 0x08000000  # not yet: the ROM waits for GETSTATUS
    assert dfu.get_state() == State.DNLOAD_SYNC
    busy = dfu.get_status()
    assert (busy.state, sim.pointer) == (State.DNBUSY, 0x08004000)
    assert dfu.get_status().state == State.DNLOAD_IDLE


def test_poll_times_are_the_chips_when_throttled():
    sim, dfu, _ = plug("sim://dfuse?chip=stm32f072&throttle=1")
    dfu.dnload(0, struct.pack("<BI", 0x41, 0x08000800))
    reply = dfu.get_status()
    assert (reply.state, reply.poll_ms) == (State.DNBUSY, 20)  # F072 page erase, typical
    assert sim.executed == [("erase", 0x08000800)]


def test_writes_land_at_pointer_plus_block_offsets_and_nothing_is_erased():
    sim, dfu, _ = plug("sim://dfuse?chip=stm32f072&throttle=0")
    set_address(dfu, 0x08001000)
    dfu.dnload(3, b"\x11" * 64)  # block 3: pointer + 1 x 64
    assert dfu.get_status().state == State.DNBUSY
    assert dfu.get_status().state == State.DNLOAD_IDLE
    assert sim.flash[0x1040:0x1080] == b"\x11" * 64
    dfu.dnload(3, b"\x22" * 64)  # the same bytes again, not erased in between
    dfu.get_status()
    failed = dfu.get_status()
    assert (failed.state, failed.status) == (State.ERROR, Status.ERR_PROG)
    assert sim.flash[0x1040:0x1080] == b"\x11" * 64


def test_an_image_option_fills_flash_at_power_up(tmp_path):
    image = tmp_path / "old.bin"
    image.write_bytes(b"\x5a" * 3000)
    sim, dfu, _ = plug(f"sim://dfuse?chip=stm32f042&throttle=0&image={image}")
    assert sim.flash[:3000] == b"\x5a" * 3000 and sim.flash[3000:3001] == b"\xff"
    assert len(sim.flash) == 32 * 1024


def test_block_one_and_unknown_commands_stall_into_error():
    sim, dfu, _ = plug("sim://dfuse?throttle=0")
    with pytest.raises(ProtocolError, match="stall"):
        dfu.dnload(1, b"\x00" * 16)
    assert (dfu.get_status().status, dfu.get_state()) == (Status.ERR_STALLEDPKT, State.ERROR)
    dfu.clear_status()
    with pytest.raises(ProtocolError, match="stall"):
        dfu.dnload(0, b"\x55")
    assert dfu.get_state() == State.ERROR


def test_upload_only_from_idle_and_block_zero_lists_the_commands():
    sim, dfu, _ = plug("sim://dfuse?throttle=0")
    assert dfu.upload(0, 16) == bytes([0x00, 0x21, 0x41, 0x92])
    set_address(dfu, 0x08000000)
    with pytest.raises(ProtocolError, match="stall"):
        dfu.upload(2, 16)  # still in dfuDNLOAD-IDLE
    dfu.clear_status()
    set_address(dfu, 0x08000000)
    dfu.abort()
    assert dfu.upload(3, 16) == b"\xff" * 16
    assert sim.executed[-1] == ("read", 0x08000010, 16)
    assert dfu.get_state() == State.UPLOAD_IDLE


def test_read_protection_refuses_reads_writes_and_erases_but_not_the_pointer():
    sim, dfu, _ = plug("sim://dfuse?throttle=0&rdp=1")
    set_address(dfu, 0x08000000)
    dfu.abort()
    with pytest.raises(ProtocolError):
        dfu.upload(2, 16)
    assert dfu.get_status().status == Status.ERR_VENDOR
    dfu.clear_status()
    dfu.dnload(0, struct.pack("<BI", 0x41, 0x08000000))
    dfu.get_status()
    assert dfu.get_status().status == Status.ERR_VENDOR


def test_an_address_outside_every_memory_is_errtarget():
    _, dfu, _ = plug("sim://dfuse?throttle=0")
    dfu.dnload(0, struct.pack("<BI", 0x21, 0x30000000))
    assert dfu.get_status().state == State.DNBUSY
    assert dfu.get_status().status == Status.ERR_TARGET


def test_the_greeting_is_dfuerror_errfirmware_until_cleared():
    _, dfu, _ = plug("sim://dfuse?throttle=0&greet=error")
    first = dfu.get_status()
    assert (first.state, first.status) == (State.ERROR, Status.ERR_FIRMWARE)
    dfu.clear_status()
    assert dfu.get_status().state == State.IDLE


def test_leave_reports_manifest_then_the_device_is_gone():
    sim, dfu, _ = plug("sim://dfuse?chip=stm32f072&throttle=0")
    set_address(dfu, 0x08000000)
    dfu.dnload(2, b"")
    assert dfu.get_status().state == State.MANIFEST
    assert sim.jumped_to == 0x08000000
    with pytest.raises(DeviceGone):
        dfu.get_status()


def test_leave_to_blank_flash_resets_into_the_rom_again():
    sim, dfu, bus = plug("sim://dfuse?chip=stm32f072&throttle=0&greet=error")
    dfu.get_status()
    dfu.clear_status()
    dfu.dnload(0, b"")
    assert dfu.get_status().state == State.MANIFEST
    bus.wait_idle()
    assert sim.boots == 2 and sim.attachment.live
    assert sim.state == State.ERROR  # a new boot greets again


def test_a_mass_erase_can_lie_about_its_time():
    sim, dfu, _ = plug("sim://dfuse?throttle=0&erase_lie=1")
    dfu.dnload(0, b"\x41")
    assert dfu.get_status().poll_ms == 100
    assert dfu.get_status().state == State.DNLOAD_IDLE
    assert sim.elapsed > 7.0  # the F407's 8 s, spent in simulated time


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sim://dfuse?chip=stm32f999", "no simulated DfuSe chip"),
        ("sim://dfuse?colour=red", "unknown option 'colour'"),
        ("sim://dfuse?busy=wait", "option busy='wait'"),
        ("sim://dfuse?fault=melt:3", "unknown fault 'melt:3'"),
        ("sim://dfuse?fault=stall:x", "needs a number"),
    ],
)
def test_bad_options_are_refused(url, message):
    with pytest.raises(ValueError, match=message):
        make_device(url)


def test_faults_hit_the_nth_dfu_request():
    sim, dfu, _ = plug("sim://dfuse?throttle=0&fault=stall:2,timeout:3,vanish:4")
    dfu.get_status()
    with pytest.raises(ProtocolError, match="stall"):
        dfu.get_status()
    with pytest.raises(ProtocolError, match="did not answer"):
        dfu.get_status()
    with pytest.raises(DeviceGone):
        dfu.get_status()
    assert not sim.attachment.live
