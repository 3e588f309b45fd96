"""--entry: BOOT0 and RESET driven from RTS/DTR, written as wiring or as steps."""

from __future__ import annotations

import time

import pytest
from shelldriver import FAST, Driver
from test_stm32_wire import ScriptedLink

from flashsh.errors import FlashshError, TransportError
from flashsh.protocols import ProbeOptions, detect
from flashsh.protocols.stm32_entry import STEP_PAUSE, Step, parse_entry
from flashsh.transports.serial import open_serial

WIRED = f"sim://stm32?chip=stm32f103c8&{FAST}&autoreset=1"


def test_wiring_form_sets_boot0_then_pulses_reset():
    sequence = parse_entry("boot0=rts,reset=dtr")
    # Straight wiring: an asserted line drives its pin low.
    assert sequence.entry == (
        Step("rts", False, 0.0),  # BOOT0 high
        Step("dtr", True, STEP_PAUSE),  # RESET low for 100 ms
        Step("dtr", False, STEP_PAUSE),  # RESET high, then 100 ms
    )
    assert sequence.exit == (
        Step("rts", True, 0.0),  # BOOT0 low
        Step("dtr", True, STEP_PAUSE),
        Step("dtr", False, 0.0),
    )


def test_inverted_lines_and_the_step_form_say_the_same():
    inverted = parse_entry("boot0=!rts,reset=!dtr")
    assert [s.asserted for s in inverted.entry] == [True, False, True]
    steps = parse_entry("-rts&dtr,-dtr,:rts&dtr,-dtr")
    assert steps.entry == parse_entry("boot0=rts,reset=dtr").entry
    assert steps.exit == parse_entry("boot0=rts,reset=dtr").exit
    # A BOOT0 jumper: no exit sequence, so leaving is a Go.
    assert parse_entry("reset=dtr").exit == ()


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("boot0=rts", "names no reset line"),
        ("reset=cts", "is not a wiring"),
        ("rts,dsr", "'dsr' is not a step"),
        (",rts", "a pause before the first step"),
        ("", "is empty"),
    ],
)
def test_bad_sequences_are_one_line_errors(text, complaint):
    with pytest.raises(FlashshError) as err:
        parse_entry(text)
    assert complaint in str(err.value) and "\n" not in str(err.value)


class LineLoggingLink(ScriptedLink):
    def __init__(self, *replies: bytes) -> None:
        super().__init__(*replies)
        self.events: list[tuple[float, str]] = []

    def set_lines(self, *, dtr: bool | None = None, rts: bool | None = None) -> bool:
        for name, value in (("dtr", dtr), ("rts", rts)):
            if value is not None:
                self.events.append((time.monotonic(), f"{'' if value else '-'}{name}"))
        return True

    def write(self, data: bytes) -> None:
        self.events.append((time.monotonic(), data.hex()))
        super().write(data)


def test_the_sequence_runs_before_the_sync_with_its_pauses():
    link = LineLoggingLink()
    parse_entry("boot0=rts,reset=dtr").run_entry(link)
    link.write(b"\x7f")
    names = [what for _, what in link.events]
    assert names == ["-rts", "dtr", "-dtr", "7f"]
    times = [t for t, _ in link.events]
    assert times[2] - times[1] >= STEP_PAUSE * 0.9  # RESET held low for 100 ms
    assert times[3] - times[2] >= STEP_PAUSE * 0.9  # the ROM gets time to start


def test_a_port_without_modem_lines_cannot_run_a_sequence():
    with pytest.raises(TransportError) as err:
        parse_entry("boot0=rts,reset=dtr").run_entry(ScriptedLink())
    assert "has none (a pty or a network port)" in str(err.value)


def test_entry_is_refused_for_the_avr_protocols():
    with open_serial(WIRED, 115200) as link, pytest.raises(FlashshError) as err:
        detect(link, ProbeOptions(protocol="stk500v1", entry="reset=dtr"))
    assert "--entry is for the STM32 ROM bootloader" in str(err.value)


def test_entry_resets_into_the_rom_and_exit_leaves_without_go():
    shell = Driver(protocol="stm32", entry="boot0=rts,reset=dtr")
    try:
        connected = shell.ok(f"connect '{WIRED}'")
        assert "after the --entry sequence" in connected["how"]
        assert connected["details"]["entry"] == "boot0=rts,reset=dtr"
        sim = shell.sim
        resets = sim.mcu.resets.get("external")
        shell.ok("reset")
        assert sim.rom.jumps == []  # the exit sequence reset the chip instead of Go
        assert sim.mcu.resets.get("external") > resets
        # The next command runs the entry sequence again and finds the ROM.
        assert shell.ok("info")["chip"] == "STM32F103x8"
    finally:
        shell.close()


def test_without_entry_the_probe_touches_no_line():
    # A board wired for --entry, but none given: the probe must not reset it.
    with open_serial(WIRED, 115200) as link:
        sim = link.port.sim
        assert sim.mcu.wait_for_state("bootloader")  # after the reset opening the port made
        before = sim.mcu.resets.get("external")
        found = detect(link, ProbeOptions(protocol="stm32"))
        assert found.how.endswith("(auto-baud: the ROM was fresh from reset)")
        assert sim.mcu.resets.get("external") == before
