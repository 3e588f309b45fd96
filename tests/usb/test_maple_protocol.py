"""flashsh's STM32duino (Maple) protocol against the simulated bootloader, through
Session and operations: what it sends, where images go, what it refuses."""

from __future__ import annotations

import json
import os
import random
import struct
import zlib

import pytest

import flashsh.protocols.maple as maple_protocol
from flashsh import operations
from flashsh.errors import FlashshError, ImageError, ProtocolError, TargetError, UnsupportedError
from flashsh.images.image import Image
from flashsh.protocols import usb_session_for
from flashsh.protocols.dfu_wire import DfuRequests, Request
from flashsh.session import Session
from flashsh.sims.maple import MapleDfu
from flashsh.sims.usb_bus import SimUsbBackend, SimUsbBus, make_device
from flashsh.transports.usb import DeviceGone, open_usb

BASE = 0x08002000
ALT1 = 0x08005000


def connect(url: str = "sim://maple?throttle=0", chip: str | None = None):
    bus = SimUsbBus()
    sim: MapleDfu = make_device(url)
    bus.plug(sim)
    link = open_usb("usb:1eaf:0003", backend=SimUsbBackend(bus), description=url)
    return Session(usb_session_for(link, chip=chip)), sim, bus


def app(size: int, at: int = BASE, fill: bytes | None = None) -> bytes:
    body = fill * (size - 8) if fill else os.urandom(size - 8)
    return struct.pack("<II", 0x20005000, at + 0x101) + body


def image(data: bytes, at: int = BASE, fmt: str = "bin", name: str = "app.bin") -> Image:
    return Image([(at, data)], source=name, format=fmt)


def flash(sim: MapleDfu, address: int, length: int) -> bytes:
    return bytes(sim.flash[address - 0x08000000 : address - 0x08000000 + length])


def downloads(sim: MapleDfu) -> list[tuple[int, int, int]]:
    """The requests from the first DNLOAD on."""
    first = next(i for i, r in enumerate(sim.requests) if r[0] == Request.DNLOAD)
    return sim.requests[first:]


# ---------------------------------------------------------------- identity


def test_identify_reads_version_alts_and_page_size():
    session, sim, _ = connect()
    info = session.info
    assert info.bootloader.startswith("STM32duino bootloader v1.0")
    assert "0x0201" in info.bootloader
    assert info.details["alt_settings"] == (
        "2: 0x08002000, 1: 0x08005000, 0: refused (ERROR. Upload to RAM not supported.)"
    )
    memory = session.memory_map
    assert memory.bootloader == (0x08000000, BASE) and memory.app_start == BASE
    assert memory.flash.page_size == 1024 and memory.flash.size == 64 * 1024
    assert "--chip stm32f103cb" in memory.size_hint


@pytest.mark.parametrize(("flash_kib", "assumed"), [(128, 64), (512, 256)])
def test_flash_size_is_assumed_from_the_page_size(flash_kib, assumed):
    session, sim, _ = connect(f"sim://maple?throttle=0&flash={flash_kib}")
    assert session.memory_map.flash.size == assumed * 1024
    assert session.memory_map.flash.page_size == sim.page_size


def test_chip_pins_the_flash_size():
    session, _, _ = connect("sim://maple?throttle=0&flash=128", chip="stm32f103cb")
    assert session.memory_map.flash.size == 128 * 1024
    assert session.memory_map.size_hint is None


@pytest.mark.parametrize("chip", ["stm32f103re", "stm32f407vg"])
def test_a_chip_that_contradicts_the_page_size_is_refused(chip):
    with pytest.raises(TargetError, match="does not match this bootloader"):
        connect(chip=chip)


def test_too_large_for_the_assumed_flash_names_the_chip_option():
    session, _, _ = connect("sim://maple?throttle=0&flash=128")
    with pytest.raises(ImageError, match="--chip stm32f103cb"):
        operations.program(session, image(app(80 * 1024)))


# ---------------------------------------------------------------- writing


def test_program_verify_sends_page_blocks_with_one_getstatus_each():
    session, sim, _ = connect()
    bootloader = flash(sim, 0x08000000, 0x2000)
    data = app(5000)
    result = operations.program(session, image(data), verify=True)
    assert result["verified"] and result["pages_written"] == 5
    assert flash(sim, BASE, 5000) == data
    assert flash(sim, BASE + 5000, 5 * 1024 - 5000) == b"\xff" * (5 * 1024 - 5000)
    assert flash(sim, 0x08000000, 0x2000) == bootloader
    sent = downloads(sim)
    blocks = sent[: 2 * 5]
    assert [r[0] for r in blocks] == [Request.DNLOAD, Request.GETSTATUS] * 5
    assert {r[2] for r in blocks[::2]} == {1024}  # every block one page, the last padded
    # then the download is closed (ABORT) before the read-back, never by a GETSTATUS
    assert sent[10][0] == Request.ABORT
    assert all(r[0] == Request.UPLOAD for r in sent[11:])
    assert not any(r[0] in (Request.CLRSTATUS, Request.GETSTATE) for r in sent)


def test_program_on_2k_pages_sends_2k_blocks():
    session, sim, _ = connect("sim://maple?throttle=0&flash=256")
    data = app(5000)
    operations.program(session, image(data), verify=True)
    assert flash(sim, BASE, 5000) == data
    assert {r[2] for r in downloads(sim) if r[0] == Request.DNLOAD} == {2048}


def test_a_gap_in_the_image_is_written_as_blank_pages():
    session, sim, _ = connect()
    operations.program(session, image(app(8 * 1024, fill=b"\x5a")))
    low, high = app(1024), os.urandom(1024)
    hex_image = Image([(BASE, low), (BASE + 0x2000, high)], source="a.hex", format="hex")
    operations.program(session, hex_image, verify=True)
    assert flash(sim, BASE, 1024) == low
    assert flash(sim, BASE + 0x400, 0x1C00) == b"\xff" * 0x1C00
    assert flash(sim, BASE + 0x2000, 1024) == high


def test_program_then_verify_image_later():
    session, sim, _ = connect()
    data = app(3000)
    operations.program(session, image(data))
    assert operations.verify_image(session, image(data))["match"]
    sim.flash[BASE - 0x08000000 + 100] ^= 0xFF
    with pytest.raises(FlashshError, match="differs from the chip at 0x08002064"):
        operations.verify_image(session, image(data))


def test_program_at_0x08005000_uses_alt_1_which_erases_the_page_at_0x08002000():
    session, sim, _ = connect()
    operations.program(session, image(app(2048)))
    data = app(2048, at=ALT1)
    result = operations.program(session, image(data, at=ALT1), verify=True)
    assert flash(sim, ALT1, 2048) == data
    assert flash(sim, BASE, 1024) == b"\xff" * 1024
    assert flash(sim, BASE + 1024, 1024) != b"\xff" * 1024  # only that one page
    assert any("alt 1 first erased the page at 0x08002000" in n for n in result["notes"])


@pytest.mark.parametrize(
    ("start", "fmt"), [(0x08003000, "bin"), (0x08002400, "hex"), (0x08004C00, "elf")]
)
def test_an_address_no_alt_serves_is_refused_naming_both(start, fmt):
    session, sim, _ = connect()
    with pytest.raises(ImageError) as caught:
        operations.program(session, image(app(1024, at=start), at=start, fmt=fmt))
    message = str(caught.value)
    assert "0x08002000 (alt 2) or 0x08005000 (alt 1)" in message and "\n" not in message
    assert not any(r[0] == Request.DNLOAD for r in sim.requests)


def test_ram_is_refused_with_the_bootloaders_reason():
    session, sim, _ = connect()
    with pytest.raises(ImageError, match=r'alt 0 says "ERROR\. Upload to RAM not supported\."'):
        operations.program(session, image(os.urandom(512), at=0x20000C00))


def test_an_image_over_the_bootloader_is_refused():
    session, sim, _ = connect()
    with pytest.raises(ImageError, match="inside the bootloader"):
        operations.program(session, image(app(0x3000, at=0x08000000), at=0x08000000))
    assert not any(r[0] == Request.DNLOAD for r in sim.requests)


def test_force_does_not_let_a_wrong_start_through():
    session, sim, _ = connect()
    with pytest.raises(ImageError, match="writes only from 0x08002000"):
        operations.program(session, image(app(1024), at=0x08003000), force=True)
    assert not any(r[0] == Request.DNLOAD for r in sim.requests)


def test_an_erase_that_does_not_start_at_an_alt_base_is_refused():
    session, sim, _ = connect()
    operations.program(session, image(app(4096)))
    before = flash(sim, BASE, 4096)
    with pytest.raises(TargetError, match="writes whole images only"):
        operations.erase(session, BASE + 0x400, 0x400)
    assert flash(sim, BASE, 4096) == before


def test_diff_is_refused():
    session, sim, _ = connect()
    with pytest.raises(UnsupportedError, match="`diff` cannot skip"):
        operations.program(session, image(app(1024)), diff=True)


def test_patching_bytes_is_refused_outside_the_first_page():
    session, sim, _ = connect()
    operations.program(session, image(app(4096)))
    before = flash(sim, BASE, 4096)
    with pytest.raises(TargetError, match="writes whole images only"):
        operations.write_bytes(session, session.memory_map.flash, BASE + 0x800, b"\x01\x02")
    assert flash(sim, BASE, 4096) == before


def test_a_vector_table_the_bootloader_would_not_start_is_refused_unless_forced():
    session, sim, _ = connect()
    data = b"\x00" * 1024
    with pytest.raises(ImageError, match="stack pointer 0x0000 is not in SRAM"):
        operations.program(session, image(data))
    operations.program(session, image(data), force=True, verify=True)
    assert flash(sim, BASE, 1024) == data


def test_a_klipper_build_for_another_mcu_is_refused():
    blob = zlib.compress(
        json.dumps(
            {"app": "Klipper", "version": "v0.12", "commands": {}, "config": {"MCU": "stm32f407xx"}}
        ).encode(),
        9,
    )
    session, _, _ = connect()
    with pytest.raises(ImageError, match="built for stm32f407xx"):
        operations.program(session, image(app(1024) + blob))


def test_a_shorter_image_over_a_longer_one_notes_the_old_data():
    session, sim, _ = connect()
    operations.program(session, image(app(6 * 1024)))
    old_tail = flash(sim, BASE + 2048, 4096)
    result = operations.program(session, image(app(2048)), verify=True)
    assert flash(sim, BASE + 2048, 4096) == old_tail
    assert result["notes"] == [
        "flash from 0x08002800 still holds older data: the bootloader erases only the pages "
        "it writes (mass_erase first clears it)"
    ]
    operations.erase(session)
    assert flash(sim, BASE, 56 * 1024) == b"\xff" * (56 * 1024)
    assert operations.program(session, image(app(2048)))["notes"] == []


def test_a_device_vanishing_mid_write_says_what_was_written():
    # requests: GETSTATE on connect; UPLOAD, UPLOAD, ABORT for the look behind the image
    # end; then DNLOAD/GETSTATUS pairs: request 11 is the fourth block's DNLOAD
    session, sim, _ = connect("sim://maple?throttle=0&fault=vanish:11")
    with pytest.raises(DeviceGone) as caught:
        operations.program(session, image(app(6 * 1024)))
    message = str(caught.value)
    assert message.startswith("writing 0x08002c00 failed: 1eaf:0003 at 1-1 is gone")
    assert "written before that: 0x08002000-0x08002bff" in message
    assert "\n" not in message


def test_a_stalled_block_ends_the_write_and_the_next_program_starts_clean():
    session, sim, _ = connect("sim://maple?throttle=0&fault=stall:10")
    with pytest.raises(ProtocolError, match="stall"):
        operations.program(session, image(app(6 * 1024)))
    data = app(6 * 1024)
    operations.program(session, image(data), verify=True)
    assert flash(sim, BASE, 6 * 1024) == data


def test_reading_the_bootloader_is_refused_with_where_to_read():
    session, _, _ = connect()
    flash_region = session.memory_map.flash
    with pytest.raises(UnsupportedError, match=r"read_bank flash FILE 0x2000"):
        operations.read_memory(session, flash_region, 0x08000000, 1024)
    data = operations.read_memory(session, flash_region, BASE + 10, 3000)
    assert data == b"\xff" * 3000


def test_reading_past_the_real_end_of_a_smaller_flash_fails_plainly():
    session, _, _ = connect("sim://maple?throttle=0&flash=64", chip="stm32f103cb")
    with pytest.raises(TargetError, match="uploads end there"):
        operations.read_memory(session, session.memory_map.flash, 0x08010000, 1024)


# ---------------------------------------------------------------- connecting


def test_a_stale_block_left_by_another_host_is_dropped_not_written():
    bus = SimUsbBus()
    sim = make_device("sim://maple?throttle=0")
    bus.plug(sim)
    link = open_usb("usb:1eaf:0003", backend=SimUsbBackend(bus))
    link.claim(0, 2)
    DfuRequests(link).dnload(0, b"\x77" * 1024)  # and no GETSTATUS: dfuDNLOAD-SYNC
    session = Session(usb_session_for(link))
    assert flash(sim, BASE, 1024) == b"\xff" * 1024
    data = app(1024)
    operations.program(session, image(data), verify=True)
    assert flash(sim, BASE, 1024) == data


def test_a_bootloader_waiting_for_reset_is_explained():
    bus = SimUsbBus()
    bus.plug(make_device("sim://maple?throttle=0"))
    link = open_usb("usb:1eaf:0003", backend=SimUsbBackend(bus))
    link.claim(0, 2)
    dfu = DfuRequests(link)
    dfu.dnload(0, app(1024))
    dfu.get_status()
    dfu.dnload(1, b"")
    dfu.get_status()
    with pytest.raises(ProtocolError, match="waits for a USB reset"):
        usb_session_for(link)


# ---------------------------------------------------------------- leaving


def test_program_reset_manifests_then_resets_and_the_app_starts():
    session, sim, bus = connect("sim://maple?throttle=0&app=klipper")
    data = app(3000)
    operations.program(session, image(data))
    session.start_application()
    sent = downloads(sim)
    assert (sent[-2][0], sent[-2][2]) == (Request.DNLOAD, 0)  # zero-length: manifest
    assert sent[-1][0] == Request.GETSTATUS
    assert sim.hard_resets == 1 and sim.app_starts == [BASE]
    assert session.info.protocol == "usb-application"


def test_program_verify_reset_reboots_from_upload_idle():
    session, sim, _ = connect("sim://maple?throttle=0&app=klipper")
    operations.program(session, image(app(3000)), verify=True)
    session.start_application()
    assert not any(r[0] == Request.DNLOAD and r[2] == 0 for r in sim.requests)
    assert sim.hard_resets == 1 and sim.app_starts == [BASE]
    assert session.info.chip == "stm32f103xe"


def test_klipper_sends_the_board_back_and_the_session_follows_both_ways():
    session, sim, _ = connect("sim://maple?throttle=0&app=klipper")
    first, second = app(2048), app(4096)
    operations.program(session, image(first), verify=True)
    session.start_application()
    assert session.request_bootloader()  # the 1200-baud touch; BOOT1 high keeps it
    assert session.info.protocol == "maple"
    operations.program(session, image(second), verify=True)
    session.start_application()
    assert flash(sim, BASE, 4096) == second and sim.app_starts == [BASE, BASE]


def test_reset_without_a_download_waits_out_the_bootloaders_wait():
    """BOOT1 low: after a plain reset the bootloader shows up for its wait, and flashsh
    must not talk to it then, or it would stay."""
    session, sim, _ = connect("sim://maple?throttle=0&app=klipper&boot1=0&wait=1")
    operations.program(session, image(app(2048)))
    session.start_application()  # after a download: the app at once
    session.request_bootloader()  # caught during its wait: it stays
    assert session.info.protocol == "maple"
    session.start_application()  # no download: the bootloader's wait, then the app
    assert session.info.protocol == "usb-application"
    assert sim.app_starts == [BASE, BASE]


def test_a_bootloader_that_stays_after_reset_is_taken_back(monkeypatch):
    monkeypatch.setattr(maple_protocol, "FOLLOW_TIMEOUT", 0.5)
    session, sim, _ = connect("sim://maple?throttle=0")  # blank flash: nothing to start
    session.start_application()
    assert sim.hard_resets == 1 and sim.app_starts == []
    assert session.info.protocol == "maple"
    data = app(1024)
    operations.program(session, image(data), verify=True)
    assert flash(sim, BASE, 1024) == data


# ---------------------------------------------------------------- images and strings


@pytest.mark.parametrize("seed", range(4))
def test_random_images_land_exactly_with_gaps_blank_and_the_tail_kept(seed):
    rng = random.Random(seed)
    session, sim, _ = connect()
    operations.program(session, image(app(40 * 1024, fill=b"\x3c")))
    segments, at = [], BASE
    for _ in range(rng.randint(1, 4)):
        length = rng.randint(1, 3000)
        segments.append((at, app(length + 8) if at == BASE else rng.randbytes(length)))
        at += len(segments[-1][1]) + rng.choice((0, rng.randint(1, 5000)))
    hex_image = Image(segments, source="r.hex", format="hex")
    tail_start = hex_image.end + (-(hex_image.end - BASE) % 1024)
    tail = flash(sim, tail_start, BASE + 40 * 1024 - tail_start)
    operations.program(session, hex_image, verify=True)
    expected = bytearray(b"\xff") * (tail_start - BASE)
    for address, data in segments:
        expected[address - BASE : address - BASE + len(data)] = data
    assert flash(sim, BASE, tail_start - BASE) == bytes(expected)
    assert flash(sim, tail_start, len(tail)) == tail


@pytest.mark.parametrize(
    ("text", "base"),
    [
        ("STM32duino bootloader v1.0  Upload to Flash 0x8002000", 0x08002000),
        ("Bootloader 2.0.rc1 Upload to Flash address 0x8005000 (Maple-mini)", 0x08005000),
        ("DFU Program FLASH 0x08005000", 0x08005000),
        ("DFU Program RAM 0x20000C00", None),
        ("STM32duino bootloader v1.0  ERROR. Upload to RAM not supported.", None),
    ],
)
def test_alt_strings_of_each_bootloader_generation(text, base):
    assert maple_protocol.MapleAlt.parse(1, text).base == base


def test_the_version_is_what_the_alt_strings_share():
    alts = [maple_protocol.MapleAlt.parse(n, t) for n, t in enumerate([
        "Bootloader 2.0.rc1 ERROR. Upload to RAM is not supported. (Maple-mini)",
        "Bootloader 2.0.rc1 Upload to Flash address 0x8005000 (Maple-mini)",
    ])]  # fmt: skip
    assert maple_protocol.common_version(alts) == "Bootloader 2.0.rc1"
