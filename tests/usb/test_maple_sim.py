"""The simulated STM32duino bootloader on the wire, through pyusb, driven by plain DFU
requests: its descriptors, and the quirks of dfu.md §7.2 that corrupt a naive host's
download (STM32duino-bootloader dfu.c)."""

from __future__ import annotations

import os
import struct

import pytest
import usb.util

from flashsh.errors import NoAnswerError, ProtocolError
from flashsh.protocols.dfu_wire import DfuRequests, Functional, Request, State, Status
from flashsh.sims.maple import ALT_NAMES, FLAG_JUST_UPLOADED, MapleDfu
from flashsh.sims.usb_bus import SimUsbBackend, SimUsbBus, make_device
from flashsh.transports.usb import DeviceGone, open_usb

BASE = 0x08002000


def plug(url: str = "sim://maple?throttle=0", alt: int = 2):
    bus = SimUsbBus()
    sim = make_device(url)
    bus.plug(sim)
    link = open_usb("usb:1eaf:0003", backend=SimUsbBackend(bus))
    link.claim(0, alt)
    return sim, DfuRequests(link), bus


def at(sim: MapleDfu, address: int, length: int) -> bytes:
    return bytes(sim.flash[address - 0x08000000 : address - 0x08000000 + length])


def image(size: int) -> bytes:
    return struct.pack("<II", 0x20005000, BASE + 0x101) + os.urandom(size - 8)


def download(dfu: DfuRequests, data: bytes, block: int) -> None:
    """dfu-util's loop with one GETSTATUS per block, as the bootloader needs."""
    for number, offset in enumerate(range(0, len(data), block)):
        dfu.dnload(number, data[offset : offset + block])
        assert dfu.get_status().state == State.DNLOAD_IDLE


def test_descriptors_are_the_bootloaders():
    sim, dfu, _ = plug()
    device = dfu.link.device
    assert (device.idVendor, device.idProduct, device.bcdDevice) == (0x1EAF, 0x0003, 0x0201)
    assert usb.util.get_string(device, device.iSerialNumber) == "LLM 003"
    settings = list(device[0])
    assert [(i.bInterfaceClass, i.bInterfaceSubClass, i.bInterfaceProtocol) for i in settings] == [
        (0xFE, 0x01, 0x02)
    ] * 3
    assert [usb.util.get_string(device, i.iInterface) for i in settings] == list(ALT_NAMES)
    assert [i.iInterface for i in settings] == [4, 5, 6]
    # usb.c patches wTransferSize to the page size; the descriptor follows alt 2.
    assert bytes(settings[2].extra_descriptors) == Functional(0x03, 255, 1024, 0x0110).pack()


@pytest.mark.parametrize(("flash", "page"), [(64, 1024), (128, 1024), (256, 2048), (512, 2048)])
def test_transfer_size_is_the_page_size(flash, page):
    sim, dfu, _ = plug(f"sim://maple?throttle=0&flash={flash}")
    assert len(sim.flash) == flash * 1024 and sim.page_size == page
    assert bytes(list(dfu.link.device[0])[2].extra_descriptors)[5:7] == page.to_bytes(2, "little")


def test_a_download_with_page_blocks_lands_at_the_base_and_spares_the_bootloader():
    sim, dfu, _ = plug()
    bootloader = at(sim, 0x08000000, 0x2000)
    data = image(3 * 1024)
    download(dfu, data, 1024)
    assert at(sim, BASE, len(data)) == data
    assert at(sim, 0x08000000, 0x2000) == bootloader
    assert sim.dr10 == FLAG_JUST_UPLOADED


def test_block_numbers_are_ignored():
    sim, dfu, _ = plug()
    pages = [bytes([n]) * 1024 for n in (1, 2, 3)]
    for number, page in zip((7, 0, 300), pages, strict=True):
        dfu.dnload(number, page)
        dfu.get_status()
    assert at(sim, BASE, 3 * 1024) == b"".join(pages)


def test_naive_host_with_half_page_blocks_corrupts_the_flash():
    """Each block erases the page it starts in: the second half-page block wipes the
    first one."""
    sim, dfu, _ = plug()
    data = image(2048)
    download(dfu, data, 512)
    written = at(sim, BASE, 2048)
    assert written != data
    assert written[:512] == b"\xff" * 512 and written[512:1024] == data[512:1024]


def test_naive_host_with_two_page_blocks_leaves_the_second_page_unwritten():
    """A 2 KiB block on a 1 KiB-page chip erases one page and programs two: the second
    page keeps what it held (F1 programming of a non-blank half-word fails)."""
    sim, dfu, _ = plug()
    download(dfu, b"\x55" * 2048, 1024)
    dfu.abort()
    data = image(2048)
    download(dfu, data, 2048)
    written = at(sim, BASE, 2048)
    assert written[:1024] == data[:1024]
    assert written[1024:] != data[1024:]


def test_naive_host_with_an_extra_getstatus_restarts_at_the_base():
    sim, dfu, _ = plug()
    first, second = b"\x11" * 1024, b"\x22" * 1024
    dfu.dnload(0, first)
    assert dfu.get_status().state == State.DNLOAD_IDLE
    assert dfu.get_status().state == State.IDLE  # the extra one ends the download
    dfu.dnload(1, second)
    assert dfu.get_status().state == State.DNLOAD_IDLE
    assert at(sim, BASE, 2048) == second + b"\xff" * 1024


def test_getstate_also_ends_an_open_download():
    sim, dfu, _ = plug()
    dfu.dnload(0, b"\x11" * 1024)
    dfu.get_status()
    assert dfu.get_state() == State.IDLE
    dfu.dnload(1, b"\x22" * 1024)
    dfu.get_status()
    assert at(sim, BASE, 1024) == b"\x22" * 1024


def test_the_write_happens_inside_the_getstatus_with_no_poll_time():
    sim, dfu, _ = plug()
    dfu.dnload(0, b"\x33" * 1024)
    assert at(sim, BASE, 4) == b"\xff" * 4
    before = sim.elapsed
    reply = dfu.get_status()
    assert (reply.state, reply.poll_ms, reply.status) == (State.DNLOAD_IDLE, 0, Status.OK)
    assert at(sim, BASE, 1024) == b"\x33" * 1024
    # a page erase (20 ms) and 512 half-words (52.5 us each), typical F103 times
    assert sim.elapsed - before >= 0.020 + 512 * 52.5e-6


def test_clrstatus_in_idle_stalls_into_error_with_status_ok():
    sim, dfu, _ = plug()
    with pytest.raises(ProtocolError, match="stall"):
        dfu.clear_status()
    reply = dfu.get_status()
    assert (reply.state, reply.status) == (State.ERROR, Status.OK)
    dfu.clear_status()
    assert dfu.get_status().state == State.IDLE


def test_detach_in_idle_stalls_into_error():
    sim, dfu, _ = plug()
    with pytest.raises(ProtocolError, match="stall"):
        dfu.detach()
    assert dfu.get_status().state == State.ERROR


def test_zero_length_download_in_idle_is_refused():
    sim, dfu, _ = plug()
    with pytest.raises(ProtocolError, match="stall"):
        dfu.dnload(0, b"")
    assert dfu.get_state() == State.ERROR


def test_alt_0_refuses_download_and_upload():
    sim, dfu, _ = plug(alt=0)
    with pytest.raises(ProtocolError, match="stall"):
        dfu.dnload(0, b"\x00" * 1024)
    assert dfu.get_status().state == State.ERROR
    dfu.clear_status()
    with pytest.raises(ProtocolError, match="stall"):
        dfu.upload(0, 1024)


def test_manifestation_waits_for_a_usb_reset_which_reboots():
    sim, dfu, bus = plug("sim://maple?throttle=0&app=none")
    download(dfu, image(1024), 1024)
    dfu.dnload(1, b"")
    assert dfu.get_status().state == State.MANIFEST_WAIT_RESET
    assert dfu.upload(0, 1024) == b""  # nothing but a reset gets out of here
    dfu.link.reset()
    assert sim.hard_resets == 1 and sim.app_starts == [BASE]
    assert dfu.link.gone()
    bus.wait_idle()
    assert bus.devices() == []  # an application without USB: the board is gone


def test_a_usb_reset_in_idle_changes_nothing():
    sim, dfu, bus = plug()
    dfu.link.reset()
    assert sim.hard_resets == 0 and not dfu.link.gone()
    assert dfu.get_status().state == State.IDLE


def test_a_reboot_without_an_application_comes_back_as_the_bootloader():
    sim, dfu, bus = plug()
    dfu.upload(0, 1024)  # dfuUPLOAD-IDLE: a reset now reboots
    dfu.link.reset()
    assert dfu.link.gone()
    bus.wait_idle()
    (back,) = bus.devices()
    assert back.device is sim and sim.app_starts == [] and sim.state == State.IDLE


def test_alt_1_first_erases_the_page_at_0x08002000():
    sim, dfu, _ = plug()
    download(dfu, image(1024), 1024)
    dfu.abort()
    dfu.link.claim(0, 1)
    data = image(1024)
    download(dfu, data, 1024)
    assert at(sim, 0x08005000, 1024) == data
    assert at(sim, BASE, 1024) == b"\xff" * 1024


def test_upload_block_length_comes_from_the_first_request():
    sim, dfu, _ = plug()
    data = image(4096)
    download(dfu, data, 1024)
    dfu.abort()
    assert dfu.upload(0, 512) == data[:512]
    assert dfu.upload(3, 512) == data[1536:2048]  # offset = wValue x 512
    assert dfu.get_state() == State.UPLOAD_IDLE


def test_upload_ends_short_at_the_end_of_flash():
    sim, dfu, _ = plug()
    dfu.upload(0, 1024)
    last = (0x08010000 - BASE) // 1024 - 1
    assert len(dfu.upload(last, 1024)) == 1024
    assert dfu.upload(last + 1, 1024) == b""
    assert dfu.get_state() == State.IDLE


def test_a_first_upload_past_the_end_is_not_checked_and_hangs_the_chip():
    sim, dfu, _ = plug()
    with pytest.raises(NoAnswerError):
        dfu.upload(100, 1024)  # 0x08002000 + 100 KiB: outside a 64 KiB flash
    assert sim.hung


@pytest.mark.parametrize(
    ("fault", "error", "what"),
    [
        ("stall:2", ProtocolError, "DFU_GETSTATUS"),
        ("timeout:1", NoAnswerError, "DFU_DNLOAD"),
        ("vanish:3", DeviceGone, "DFU_DNLOAD"),
    ],
)
def test_faults_hit_the_nth_dfu_request(fault, error, what):
    sim, dfu, _ = plug(f"sim://maple?throttle=0&fault={fault}")
    with pytest.raises(error, match=what):
        download(dfu, image(2048), 1024)
    n = int(fault.split(":")[1])
    assert len(sim.requests) == n
    assert sim.requests[-1][0] == (Request.GETSTATUS if "GETSTATUS" in what else Request.DNLOAD)


@pytest.mark.parametrize(
    "url",
    [
        "sim://maple?flash=32",
        "sim://maple?chip=stm32f407vg",
        "sim://maple?app=marlin",
        "sim://maple?fault=drop:3",
        "sim://maple?colour=blue",
    ],
)
def test_bad_options_are_refused(url):
    with pytest.raises(ValueError):
        make_device(url)
