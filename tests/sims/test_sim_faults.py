"""Fault injection: each fault changes exactly what its description says."""

from __future__ import annotations

import pytest
from sim_helpers import exchange

from flashsh.sims.faults import Faults


def test_drop_loses_the_nth_byte_from_the_target(sim_port):
    port = sim_port("fault=drop:2")
    exchange(port, "30 20", "14")
    exchange(port, "30 20", "14 10")


def test_corrupt_inverts_the_nth_byte(sim_port):
    port = sim_port("fault=corrupt:3")
    exchange(port, "30 20", "14 10")
    exchange(port, "30 20", "eb 10")


def test_stop_silences_the_target_after_n_bytes(sim_port):
    port = sim_port("fault=stop:3")
    exchange(port, "30 20", "14 10")
    exchange(port, "30 20", "14")
    exchange(port, "30 20", "")
    port.dtr = False
    port.dtr = True
    exchange(port, "30 20", "")
    assert port.sim.state == "bootloader"  # still running, only its TX line is dead


def test_nosync_and_failed_replace_the_reply_to_command_n(sim_port):
    port = sim_port("fault=nosync:2,failed:3")
    exchange(port, "30 20", "14 10")
    exchange(port, "30 20", "15")
    exchange(port, "75 20", "14 11")
    exchange(port, "75 20", "14 1e 95 0f 10")
    assert port.sim.mcu.commands == 4


def test_a_faulted_write_is_still_carried_out(sim_port):
    port = sim_port("fault=failed:2")
    exchange(port, "55 00 00 20", "14 10")
    exchange(port, "64 00 02 46 12 34 20", "14 11")
    assert port.sim.flash[:2] == b"\x12\x34"


def test_repeated_fault_options_add_up(sim_port):
    port = sim_port("fault=drop:1&fault=drop:4")
    exchange(port, "30 20", "10")
    exchange(port, "30 20", "14")


def test_dead_board_never_answers(sim_port):
    port = sim_port("fault=dead", settle=False)
    assert port.sim.mcu.wait_for_state("dead")
    exchange(port, "30 20", "")
    port.sim.reset()
    exchange(port, "30 20", "")
    assert port.sim.state == "dead"


def test_parse_accepts_lists_and_rejects_nonsense():
    faults = Faults.parse(["drop:3, corrupt:0x10", "nosync:2", "stop:9", "stop:5"])
    assert faults.drop == {3} and faults.corrupt == {16} and faults.nosync == {2}
    assert faults.stop_after == 5
    assert not Faults() and Faults.parse("dead").dead
    for bad, message in [
        ("explode:1", "unknown fault 'explode:1'; valid: drop:N"),
        ("drop", "needs a number"),
        ("drop:x", "needs a number"),
        ("drop:0", "counts start at 1"),
        ("dead:3", "takes no number"),
    ]:
        with pytest.raises(ValueError, match=message):
            Faults.parse(bad)
