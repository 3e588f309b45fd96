"""Auto-detection with STK500v1 and STK500v2 in the probe chain."""

from __future__ import annotations

import pytest

from flashsh.errors import NoAnswerError
from flashsh.protocols import ProbeOptions, detect, probe_plan
from flashsh.protocols.stk500v1 import Stk500v1
from flashsh.protocols.stk500v2 import Stk500v2
from flashsh.transports.serial import open_serial

MEGA = "sim://stk500v2?mode=bootloader&chip=atmega2560&throttle=0"


def test_every_protocol_is_tried_at_a_baud_rate_before_the_next_rate():
    plan = probe_plan(["stk500v1", "stk500v2"], None)
    assert [(baud, name) for baud, name, _ in plan] == [
        (115200, "stk500v1"),  # GET_SYNC first: it does not upset the v2 bootloader
        (115200, "stk500v2"),  # a v2 sign-on would make optiboot start the application
        (57600, "stk500v1"),
    ]
    assert [cls for _, _, cls in plan] == [Stk500v1, Stk500v2, Stk500v1]
    assert [(b, n) for b, n, _ in probe_plan(["stk500v1", "stk500v2"], 57600)] == [
        (57600, "stk500v1"),
        (57600, "stk500v2"),
    ]


def test_auto_detection_finds_the_mega_right_after_the_v1_probe():
    tried: list[str] = []
    with open_serial(MEGA, 115200) as link:
        found = detect(link, ProbeOptions(), tried.append)
        assert isinstance(found, Stk500v2) and found.mode == "bootloader"
        # The GET_SYNCs kept the bootloader listening: no second reset was needed.
        assert found.how.endswith("without a reset")
    assert tried == ["trying stk500v1 at 115200 baud", "trying stk500v2 at 115200 baud"]


def test_protocol_stk500v2_skips_the_v1_probe():
    tried: list[str] = []
    with open_serial(MEGA, 115200) as link:
        detect(link, ProbeOptions(protocol="stk500v2"), tried.append)
    assert tried == ["trying stk500v2 at 115200 baud"]


def test_protocol_stk500v2_on_an_optiboot_board_says_what_was_tried():
    with (
        open_serial("sim://stk500v1?chip=atmega328p&throttle=0", 115200) as link,
        pytest.raises(NoAnswerError) as err,
    ):
        detect(link, ProbeOptions(protocol="stk500v2"))
    assert "tried stk500v2@115200)" in str(err.value)


def test_a_bootloader_caught_in_its_monitor_is_reset_and_found():
    with open_serial(MEGA + "&build=old", 115200) as link:
        link.port.sim.mcu.wait_for_state("bootloader")
        link.write(b"!!!")  # what a stray image byte run does to the old build
        found = Stk500v2.probe(link, reset=True)
        assert found is not None and found.how.endswith("after a DTR/RTS reset pulse")
        assert link.port.sim.firmware.monitor_runs == 1


def sent_bodies(url: str) -> list[bytes]:
    """Every message body the host sends while connecting to ``url``."""
    bodies: list[bytes] = []
    with open_serial(url, 115200) as link:
        write = link.write

        def recording(data: bytes) -> None:
            if data[:1] == b"\x1b":
                bodies.append(data[5:-1])
            write(data)

        link.write = recording  # type: ignore[method-assign]
        assert Stk500v2.probe(link, reset=True) is not None
    return bodies


def test_connecting_to_a_programmer_sends_what_the_fact_sheet_shows():
    bodies = sent_bodies("sim://stk500v2?mode=isp&chip=atmega328p&throttle=0")
    sample = [
        "01",  # CMD_SIGN_ON
        "02 9E 01",  # PARAM_RESET_POLARITY = 1 on an STK500
        "10 C8 64 19 20 00 53 03 AC 53 00 00",  # CMD_ENTER_PROGMODE_ISP
        "1B 04 30 00 00 00",  # signature bytes 0..2
        "1B 04 30 00 01 00",
        "1B 04 30 00 02 00",
    ]
    sample_bodies = [bytes.fromhex(b) for b in sample]
    assert [b for b in bodies if b in sample_bodies] == sample_bodies


def test_connecting_to_the_bootloader_sends_what_avrdude_wiring_sends():
    bodies = sent_bodies(MEGA)
    assert bytes.fromhex("10 C8 64 19 20 00 53 03 AC 53 00 00") in bodies
    assert bytes.fromhex("02 9E 01") not in bodies  # only for STK500 / STK600 sign-ons
    assert bodies[-3:] == [bytes.fromhex(f"1B 04 30 00 0{i} 00") for i in range(3)]
