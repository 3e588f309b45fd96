"""Plain DFU 1.1 through the session and operations against sim://dfu: both
manifestation modes, run-time mode detach, where block 0 lands, reading back, the
files it refuses, and faults."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from flashsh import operations
from flashsh.errors import (
    FlashshError,
    ImageError,
    NoAnswerError,
    ProtocolError,
    TargetError,
    UnsupportedError,
)
from flashsh.images import Image, load_image
from flashsh.images.dfu_file import Element, Target, encode_dfu, encode_dfuse
from flashsh.protocols import dfu as dfu_protocol
from flashsh.protocols import usb_session_for
from flashsh.protocols.dfu import Dfu
from flashsh.session import Session
from flashsh.sims.dfu_generic import GenericDfu
from flashsh.sims.usb_bus import SimUsbBackend, SimUsbBus, make_device
from flashsh.transports.usb import DeviceGone, open_usb

SMOOTHIE = 0x4000  # where the Smoothieboard bootloader writes block 0


class Board:
    """One simulated device on its own bus, and the sessions opened to it."""

    def __init__(self) -> None:
        self.bus = SimUsbBus()
        self.sessions: list[Session] = []
        self.sim: GenericDfu

    def plug(self, options: str = "") -> GenericDfu:
        url = "sim://dfu?throttle=0" + (f"&{options}" if options else "")
        self.sim = make_device(url)  # type: ignore[assignment]
        self.bus.plug(self.sim)
        return self.sim

    def connect(self, chip: str | None = None) -> Session:
        link = open_usb("usb", backend=SimUsbBackend(self.bus))
        session = Session(usb_session_for(link, chip=chip), "sim://dfu")
        self.sessions.append(session)
        return session


@pytest.fixture
def board() -> Iterator[Board]:
    made = Board()
    yield made
    for session in made.sessions:
        session.close()


@pytest.fixture
def quick_follow(monkeypatch: pytest.MonkeyPatch) -> None:
    """A board that never comes back is given up on sooner than a real one would be."""
    monkeypatch.setattr(dfu_protocol, "FOLLOW_TIMEOUT", 0.3)


def firmware(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def requests(sim: GenericDfu, name: str) -> list[tuple[int, int]]:
    """(wValue, wLength) of every ``name`` request the device served."""
    return [(value, length) for n, value, length, _ in sim.log if n == name]


# ------------------------------------------------------------------ program, verify


@pytest.mark.parametrize("tolerant", ["1", "0"])
def test_program_verify_read_in_both_manifestation_modes(board, tolerant):
    # The not-tolerant board reboots into its application after the download; that
    # application has a DFU run-time interface, so verify follows it back into DFU mode.
    sim = board.plug(f"tolerant={tolerant}&runtime=1&poll=1")
    session = board.connect()
    assert isinstance(session.bootloader, Dfu)
    data = firmware(5000)
    result = operations.program(session, Image([(SMOOTHIE, data)], source="a.bin"), verify=True)
    assert result["verified"] and result["pages_written"] == 10
    assert sim.memory[:5000] == data and sim.downloads == 1
    # Blocks numbered 0..9 of wTransferSize, then the zero-length DNLOAD numbered 10.
    assert requests(sim, "DNLOAD") == [(n, 512) for n in range(10)] + [(10, 0)]
    assert requests(sim, "UPLOAD")[:2] == [(0, 512), (1, 512)]
    if tolerant == "1":
        assert sim.boots == 0 and result["notes"] == []
    else:
        assert sim.boots == 1 and "not manifestation tolerant" in result["notes"][0]
        assert session.bootloader.runtime is not None
    flash = session.memory_map.flash
    assert operations.read_memory(session, flash, SMOOTHIE + 512, 1024) == data[512:1536]
    assert operations.verify_image(session, Image([(SMOOTHIE, data)]))["match"]


def test_dnbusy_is_polled_through_and_blocks_wait_their_poll_time(board):
    sim = board.plug("tolerant=1&poll=2&transfer=1024")
    session = board.connect()
    operations.program(session, Image([(SMOOTHIE, firmware(3000))]))
    states = [state for name, _, _, state in sim.log if name == "GETSTATUS"]
    # Each block: GETSTATUS in dfuDNLOAD-SYNC (answers dfuDNBUSY), then in dfuDNBUSY
    # after the poll time (answers dfuDNLOAD-IDLE); the host never asks too early.
    assert states.count("DNBUSY") == 3 and states.count("DNLOAD_SYNC") == 3
    assert states[-2:] == ["MANIFEST_SYNC", "MANIFEST"]


def test_smoothieboard_that_leaves_the_bus_after_manifestation_counts_as_success(board):
    sim = board.plug("manifest=vanish")
    session = board.connect()
    result = operations.program(session, Image([(SMOOTHIE, firmware(700))]))
    assert result["pages_written"] == 2 and sim.boots == 1 and sim.downloads == 1
    assert not board.bus.devices()


def test_not_tolerant_board_whose_application_has_no_usb_cannot_be_verified(board, quick_follow):
    board.plug()
    session = board.connect()
    data = firmware(1500)
    with pytest.raises(DeviceGone) as caught:
        operations.program(session, Image([(SMOOTHIE, data)], source="a.bin"), verify=True)
    text = str(caught.value)
    assert text.startswith("reading back 0x4000 failed: 1d50:6015 did not come back in DFU mode")
    assert "every page was written" in text and "\n" not in text
    assert board.sim.memory[:1500] == data and board.sim.boots == 1


def test_reset_then_the_next_command_detaches_the_application_again(board):
    sim = board.plug("tolerant=1&runtime=1")
    session = board.connect()
    operations.program(session, Image([(SMOOTHIE, firmware(600))]))
    session.start_application()
    assert sim.boots == 1 and sim.mode == "app"
    board.bus.wait_idle()
    assert operations.verify_image(session, Image([(SMOOTHIE, firmware(600))]))["match"]
    assert sim.mode == "dfu" and requests(sim, "DETACH") == [(1000, 0), (1000, 0)]


def test_reset_without_firmware_comes_back_in_dfu_mode_with_errfirmware(board):
    sim = board.plug("tolerant=1")
    session = board.connect()
    session.start_application()
    board.bus.wait_idle()
    assert sim.state.name == "ERROR" and sim.boots == 0
    # The next command clears the error and carries on.
    assert operations.read_memory(session, session.memory_map.flash, SMOOTHIE, 4) == b"\xff" * 4


# ------------------------------------------------------------------ run-time mode


@pytest.mark.parametrize(("will_detach", "resets"), [("0", 1), ("1", 0)])
def test_run_time_device_is_detached_into_dfu_mode(board, will_detach, resets):
    sim = board.plug(f"runtime=1&willdetach={will_detach}&app_id=1d50:6016")
    session = board.connect()
    assert session.info.how == "detached from run-time mode (1d50:6016)"
    assert session.info.details["run_time_id"] == "1d50:6016"
    assert sim.mode == "dfu" and sim.traffic.resets == resets
    assert requests(sim, "DETACH") == [(1000, 0)]
    # dfu-util accepts a file for either id; so does flashsh.
    made_for_app = Image([(SMOOTHIE, b"x")])
    made_for_app.usb_ids = (0x1D50, 0x6016)  # type: ignore[attr-defined]
    session.bootloader.check_image(made_for_app)


# ------------------------------------------------------------------ where block 0 lands


def test_layouts_known_given_and_unknown(board):
    board.plug("usb_id=1209:0001&size=8K")
    unknown = board.connect()
    flash = unknown.memory_map.flash
    assert (flash.start, flash.end, flash.page_size) == (0, 1 << 32, 512)
    assert unknown.info.details["memory_size"].startswith("not reported by DFU")
    assert unknown.memory_map.size_hint.startswith("plain DFU reports neither")
    given = board.connect(chip="0x08002000+8K")
    flash = given.memory_map.flash
    assert (flash.start, flash.size, given.memory_map.app_start) == (0x08002000, 8192, 0x08002000)
    with pytest.raises(TargetError, match="--chip 'stm32f103' does not describe"):
        board.connect(chip="stm32f103")


def test_image_that_does_not_start_at_block_0_is_refused_even_with_force(board, tmp_path):
    board.plug()
    session = board.connect()
    hex_file = tmp_path / "app.hex"
    hex_file.write_text(":020000040800F2\n:0400000001020304F2\n:00000001FF\n")
    image = load_image(hex_file)
    for force in (False, True):
        with pytest.raises(ImageError) as caught:
            operations.program(session, image, force=force)
        assert str(caught.value) == (
            f"{hex_file} starts at 0x08000000, but a DFU device writes from its first block, "
            "which flashsh places at 0x4000 (program the .bin (it goes to 0x4000), or "
            "connect with --chip 0x08000000 if the device's memory starts there)"
        )
    assert not requests(board.sim, "DNLOAD")


def test_gaps_between_segments_are_sent_as_blank_flash(board):
    sim = board.plug("tolerant=1")
    sim.memory[:4096] = b"\x00" * 4096
    session = board.connect()
    image = Image([(SMOOTHIE, b"A" * 100), (SMOOTHIE + 2000, b"B" * 100)])
    operations.program(session, image, verify=True)
    assert sim.memory[:100] == b"A" * 100
    assert sim.memory[100:2000] == b"\xff" * 1900
    assert sim.memory[2000:2100] == b"B" * 100


def test_unaligned_base_streams_from_the_base(board):
    sim = board.plug("tolerant=1&usb_id=1209:0001")
    session = board.connect(chip="0x100+4K")
    data = firmware(1000)
    operations.program(session, Image([(0x100, data)]), verify=True)
    assert sim.memory[:1000] == data
    assert requests(sim, "DNLOAD") == [(0, 512), (1, 512), (2, 0)]
    assert session.memory_map.flash.page_size == 256


def test_diff_sends_everything_or_nothing(board):
    sim = board.plug("tolerant=1")
    session = board.connect()
    data = firmware(3000)
    operations.program(session, Image([(SMOOTHIE, data)]))
    same = operations.program(session, Image([(SMOOTHIE, data)]), diff=True)
    assert same["pages_written"] == 0 and sim.downloads == 1
    changed = data[:2000] + b"\x00" + data[2001:]
    result = operations.program(session, Image([(SMOOTHIE, changed)]), diff=True)
    assert result["pages_written"] == 6 and sim.downloads == 2
    assert sim.memory[:3000] == changed


# ------------------------------------------------------------------ reading


def test_upload_ends_at_the_short_block(board):
    board.plug("tolerant=1&usb_id=1209:0001&size=1300")
    session = board.connect()
    flash = session.memory_map.flash
    assert operations.read_memory(session, flash, 0, 1300) == b"\xff" * 1300
    with pytest.raises(TargetError) as caught:
        operations.read_memory(session, flash, 0, 4096)
    assert str(caught.value) == (
        "the device's memory ends at 0x0514: its upload stopped there (read at most 1300 "
        "bytes from 0x0000, or give the size with --chip BASE+SIZE)"
    )


def test_reading_backwards_restarts_the_upload(board, tmp_path):
    data = firmware(4096, 3)
    (tmp_path / "pre.bin").write_bytes(data)
    sim = board.plug(f"tolerant=1&image={tmp_path / 'pre.bin'}")
    session = board.connect()
    flash = session.memory_map.flash
    tail = operations.read_memory(session, flash, SMOOTHIE + 3072, 512)
    head = operations.read_memory(session, flash, SMOOTHIE, 512)
    assert (head, tail) == (data[:512], data[3072:3584])
    assert [value for value, _ in requests(sim, "UPLOAD")] == [0, 1, 2, 3, 4, 5, 6, 0]
    assert len(requests(sim, "ABORT")) == 1


def test_write_only_device_refuses_verify_before_writing(board):
    sim = board.plug("upload=0")
    session = board.connect()
    with pytest.raises(UnsupportedError) as caught:
        operations.program(session, Image([(SMOOTHIE, b"abc")]), verify=True)
    assert str(caught.value) == (
        "dfu cannot read back, so it cannot verify (its DFU descriptor says it cannot "
        "upload (bitCanUpload is 0): it only takes downloads)"
    )
    assert not requests(sim, "DNLOAD")
    assert session.memory_map.flash.access == "w"


# ------------------------------------------------------------------ refusals


def test_dfuse_file_is_refused_before_anything_is_sent(board, tmp_path):
    board.plug()
    session = board.connect()
    path = tmp_path / "stm32.dfu"
    path.write_bytes(encode_dfuse([Target(0, (Element(SMOOTHIE, b"abc"),))]))
    with pytest.raises(ImageError) as caught:
        operations.program(session, load_image(path))
    assert str(caught.value) == (
        f"{path} is a DfuSe file (ST's format, addresses per alternate setting); this device "
        "speaks plain DFU 1.1 (program the .bin, or a .dfu made with dfu-suffix)"
    )
    assert not requests(board.sim, "DNLOAD")


def test_dfu_suffix_for_another_device_is_refused_unless_forced(board, tmp_path):
    sim = board.plug("tolerant=1")
    session = board.connect()
    path = tmp_path / "other.dfu"
    path.write_bytes(encode_dfu(b"firmware", vendor=0x0483, product=0xDF11))
    image = load_image(path, default_address=SMOOTHIE)
    with pytest.raises(ImageError) as caught:
        operations.program(session, image)
    assert str(caught.value) == (
        f"{path} is for USB device 0483:df11 (its DFU suffix says so), not 1d50:6015 "
        "(use the file built for this board, or add `force`)"
    )
    operations.program(session, image, force=True)
    assert sim.memory[:8] == b"firmware"
    good = tmp_path / "smoothie.dfu"
    good.write_bytes(encode_dfu(b"firmware2", vendor=0x1D50, product=0x6015))
    operations.program(session, load_image(good, default_address=SMOOTHIE), verify=True)
    assert sim.memory[:9] == b"firmware2"


def test_image_larger_than_the_device_is_refused_by_it(board):
    sim = board.plug("tolerant=1&usb_id=1209:0001&size=2K")
    session = board.connect()
    with pytest.raises(TargetError) as caught:
        operations.program(session, Image([(0, firmware(3000))]))
    assert str(caught.value) == (
        "writing 0x0800 failed: the device refused block 4 (0x0800): the address is out of "
        "range (errADDRESS); written before that: 0x0000-0x07ff (the image is larger than "
        "the device's memory (plain DFU does not report its size))"
    )
    assert sim.memory == bytearray(firmware(3000)[:2048])
    # With the size known, the fit check refuses it before anything is sent.
    sized = board.connect(chip="0+2K")
    with pytest.raises(ImageError, match="larger than the flash"):
        operations.program(sized, Image([(0, firmware(3000))]))


def test_erase_and_patch_need_a_known_size(board):
    sim = board.plug("tolerant=1&usb_id=1209:0001&size=4K")
    session = board.connect()
    with pytest.raises(UnsupportedError) as caught:
        operations.erase(session)
    assert str(caught.value).startswith(
        "plain DFU has no erase or patch, and this device does not report its memory size"
    )
    with pytest.raises(TargetError, match="cannot start at 0x0400"):
        operations.write_bytes(session, session.memory_map.flash, 0x500, b"\x01")
    assert not requests(sim, "DNLOAD")
    sized = board.connect(chip="0+4K")
    sim.memory[:] = b"\x00" * 4096
    result = operations.erase(sized)
    assert result["method"] == "0xFF written over each page"
    assert sim.memory == bytearray(b"\xff" * 4096)


# ------------------------------------------------------------------ faults


@pytest.mark.parametrize(
    ("fault", "error", "message"),
    [
        ("stall", ProtocolError, "the device refused block 1 (0x4200): the device refused an "
         "unexpected request (errSTALLEDPKT), state dfuERROR"),
        ("timeout", NoAnswerError, "1d50:6015 at 1-1 did not answer while DFU_DNLOAD of block 1"),
        ("vanish", DeviceGone, "1d50:6015 at 1-1 is gone from the USB bus while DFU_DNLOAD of "
         "block 1"),
    ],
)  # fmt: skip
def test_faults_during_a_download_are_one_line(board, fault, error, message):
    # Requests: GETSTATUS (connect), GETSTATUS (start of the download), DNLOAD 0,
    # GETSTATUS, DNLOAD 1: the fifth.
    board.plug(f"tolerant=1&fault={fault}:5")
    session = board.connect()
    with pytest.raises(error) as caught:
        operations.program(session, Image([(SMOOTHIE, firmware(2048))]))
    text = str(caught.value)
    assert "\n" not in text and message in text
    assert text.startswith("writing 0x4200 failed: ")


def test_a_stalled_block_is_cleared_and_the_next_program_succeeds(board):
    sim = board.plug("tolerant=1&fault=stall:5")
    session = board.connect()
    data = firmware(2048)
    with pytest.raises(FlashshError):
        operations.program(session, Image([(SMOOTHIE, data)]))
    assert operations.program(session, Image([(SMOOTHIE, data)]), verify=True)["verified"]
    assert requests(sim, "CLRSTATUS") and sim.memory[:2048] == data


def test_device_gone_during_upload(board):
    board.plug("tolerant=1&fault=vanish:4")
    session = board.connect()
    with pytest.raises(DeviceGone, match="DFU_UPLOAD of block 1"):
        operations.read_memory(session, session.memory_map.flash, SMOOTHIE, 2048)
