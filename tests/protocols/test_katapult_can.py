"""Katapult and Klipper nodes on a CAN bus, driven through flashsh as a user would."""

from __future__ import annotations

import errno
import json
import random
import subprocess
import sys

import pytest
from shelldriver import Driver

from flashsh.transports.can import CanOptions, send_error

KATAPULT = "aabbccddeeff"
KLIPPER = "112233445566"
FLASH = 0x08000000
APP = 0x08002000
BUS = f"sim://can?node=katapult:{KATAPULT}&node=klipper:{KLIPPER}&throttle=0"


@pytest.fixture(autouse=True)
def fresh_simulators():
    """Each test meets freshly powered nodes (a process keeps one simulator per URL)."""
    from flashsh.transports import can

    yield
    for handle in can._SIMULATED.values():
        handle.stop()
    can._SIMULATED.clear()


def flashsh(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flashsh", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def image(tmp_path, size=5000, seed=1, name="klipper.bin"):
    path = tmp_path / name
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def driver(url: str = BUS) -> Driver:
    return Driver(can=CanOptions(channel=url))


def sim_node(d: Driver, uuid: str):
    return d.shell.require_session().bootloader.link.bus.sim.node(uuid)


def app_area(node, size: int) -> bytes:
    return node.flash[APP - FLASH : APP - FLASH + size]


# ---------------------------------------------------------------------- query


def test_query_lists_both_nodes_with_their_applications():
    result = flashsh("--can-channel", BUS, "-c", "query --timeout 0.5")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"{KATAPULT}  Katapult" in lines
    assert f"{KLIPPER}  Klipper" in lines
    assert "2 nodes answered" in lines


def test_query_json_is_a_list_of_nodes():
    result = flashsh("--json", "--can-channel", BUS, "-c", "query --timeout 0.5")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout.splitlines()[-1])
    assert record["command"] == "query" and record["ok"]
    assert sorted(record["result"], key=lambda n: n["uuid"]) == [
        {"uuid": KLIPPER, "application": "Klipper"},
        {"uuid": KATAPULT, "application": "Katapult"},
    ]


def test_query_with_no_answer_says_what_to_check():
    silent = f"sim://can?node=katapult:{KATAPULT},fault=silent&throttle=0"
    result = flashsh("--can-channel", silent, "-c", "query --timeout 0.3")
    assert result.returncode == 1
    error = result.stderr.strip()
    assert "\n" not in error
    assert "no CAN node answered" in error and "bitrate" in error


def test_query_uuids_complete_connect():
    from flashsh.commands.connection import target_choices

    d = driver()
    assert KATAPULT not in target_choices(d.shell).to_strings()
    d.ok("query --timeout 0.5")
    offered = target_choices(d.shell).to_strings()
    assert KATAPULT in offered and KLIPPER in offered


def test_query_keeps_the_open_session_working(tmp_path):
    # The query takes every Katapult node id away; the session's node gets its id back.
    d = driver()
    d.ok(f"connect {KATAPULT}")
    nodes = d.ok("query --timeout 0.3")
    assert {n["uuid"] for n in nodes} == {KATAPULT, KLIPPER}
    path = image(tmp_path, 300)
    d.ok(f"program {path} verify")
    assert app_area(sim_node(d, KATAPULT), 300) == path.read_bytes()
    d.close()


# ---------------------------------------------------------------------- program


def test_program_by_uuid_verifies_and_starts_the_application(tmp_path):
    path = image(tmp_path, 5000)
    d = driver()
    info = d.ok(f"connect {KATAPULT}")
    assert info["protocol"] == "katapult" and info["chip"] == "stm32f103xe"
    assert info["details"]["application_start"] == "0x08002000"
    result = d.ok(f"program {path} verify reset")
    assert result["verified"] and result["reset"]
    node = sim_node(d, KATAPULT)
    assert app_area(node, 5000) == path.read_bytes()
    assert node.state == "application"
    # The bootloader below the application is untouched.
    assert node.flash[: APP - FLASH].startswith(b"Katapult")
    d.close()


def test_program_with_reset_reads_back_even_without_verify(tmp_path):
    path = image(tmp_path, 700)
    d = driver()
    d.ok(f"connect {KATAPULT}")
    result = d.ok(f"program {path} reset")
    assert result["verified"] is True
    d.close()


def test_reset_refuses_unverified_blocks_and_leaves_the_node_in_katapult(tmp_path):
    path = image(tmp_path, 700)
    d = driver()
    d.ok(f"connect {KATAPULT}")
    d.ok(f"program {path}")
    error = d.error("reset")
    assert "not read back" in error and "0x08002000-0x080022bf" in error
    node = sim_node(d, KATAPULT)
    assert node.state == "bootloader"
    assert not node.logged("COMPLETE")
    d.ok(f"verify_image {path}")
    d.ok("reset")
    assert node.state == "application"
    d.close()


def test_image_for_another_application_start_is_refused(tmp_path):
    hex_file = tmp_path / "wrong.hex"
    from intelhex import IntelHex

    ih = IntelHex()
    ih.frombytes(b"\x01" * 64, offset=0x08004000)
    ih.write_hex_file(str(hex_file))
    d = driver()
    d.ok(f"connect {KATAPULT}")
    error = d.error(f"program {hex_file}")
    assert "starts at 0x08004000" in error and "0x08002000" in error
    assert app_area(sim_node(d, KATAPULT), 0x4000) == b"\xff" * 0x4000
    d.close()


def test_diff_rewrites_whole_flash_pages_first_block_first(tmp_path):
    old = random.Random(3).randbytes(8192)
    new = bytearray(old)
    new[3000] ^= 0xFF  # inside the second 2 KiB of the application
    path = tmp_path / "new.bin"
    path.write_bytes(bytes(new))
    (tmp_path / "old.bin").write_bytes(old)
    d = driver()
    d.ok(f"connect {KATAPULT}")
    d.ok(f"program {tmp_path / 'old.bin'} verify")
    result = d.ok(f"program {path} diff verify")
    # 2 KiB of 64-byte blocks: an F103 has 1 or 2 KiB pages, and the changed block alone
    # would be refused, as its page holds data and only the page's first block erases it.
    assert result["pages_written"] == 2048 // 64
    assert app_area(sim_node(d, KATAPULT), 8192) == bytes(new)
    d.close()


def test_read_bank_reads_the_bootloader_too(tmp_path):
    d = driver()
    d.ok(f"connect {KATAPULT}")
    out = tmp_path / "boot.bin"
    d.ok(f"read_bank 0 {out} 0 128")  # offset into the bank, as OpenOCD
    assert out.read_bytes()[:8] == b"Katapult"
    d.close()


# ---------------------------------------------------------------------- Klipper


def test_connect_to_a_klipper_node_says_so_and_memory_commands_advise(tmp_path):
    result = flashsh("--can-channel", BUS, "-c", f"program {image(tmp_path)} verify", KLIPPER)
    assert result.returncode == 1
    said = result.stdout.strip()
    assert said.startswith("connected: Klipper firmware is running on sim://can node 112233")
    assert said.endswith("not a bootloader; use `bootloader` to reboot it into Katapult")
    error = result.stderr.strip()
    assert "\n" not in error
    assert f"Klipper firmware is running on node {KLIPPER}, not a bootloader" in error
    assert "use `bootloader`" in error


def test_bootloader_request_then_program_as_one_command_line(tmp_path):
    path = image(tmp_path, 3000)
    result = flashsh(
        "--can-channel", BUS, "-c", f"bootloader; program {path} verify reset", KLIPPER
    )
    assert result.returncode == 0, result.stderr
    assert "now in Katapult" in result.stdout
    assert "verified; application started" in result.stdout


def test_bootloader_request_reaches_the_node_and_flash_continues(tmp_path):
    path = image(tmp_path, 3000)
    d = driver()
    d.ok(f"connect {KLIPPER}")
    node = sim_node(d, KLIPPER)
    assert node.state == "application"
    d.ok("bootloader")
    assert node.state == "bootloader" and node.logged("bootloader request")
    d.ok(f"program {path} verify reset")
    assert app_area(node, 3000) == path.read_bytes()
    # And back again: the application it now runs honours the request too.
    assert d.ok("bootloader")["already"] is False
    assert d.ok("bootloader")["already"] is True
    d.ok(f"verify_image {path}")
    d.close()


# ---------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    "fault", ["drop:5", "dup:5", "respdrop:5", "respdup:5", "crc:5", "nack:5", "busy:5"]
)
def test_line_faults_end_in_a_retry_that_succeeds(tmp_path, fault):
    path = image(tmp_path, 2000)
    d = driver(f"sim://can?node=katapult:{KATAPULT},fault={fault}&throttle=0")
    d.ok(f"connect {KATAPULT}")
    d.ok(f"program {path} verify reset")
    node = sim_node(d, KATAPULT)
    assert app_area(node, 2000) == path.read_bytes()
    retries = d.shell.require_session().bootloader.retries
    # A duplicated ACK costs nothing: the stale copy is recognised and skipped.
    assert retries == 0 if fault.startswith("respdup") else retries >= 1
    d.close()


def test_node_that_resets_into_its_application_mid_flash_is_reported(tmp_path):
    path = image(tmp_path, 4000)
    d = driver(f"sim://can?node=katapult:{KATAPULT},fault=reboot:10&throttle=0")
    d.ok(f"connect {KATAPULT}")
    error = d.error(f"program {path} verify")
    assert "\n" not in error
    assert "now runs its application" in error
    assert "written before that: 0x08002000-0x0800223f" in error
    assert "use `bootloader`, then program again" in error
    # Doing what it says finishes the job.
    d.ok("bootloader")
    d.ok(f"program {path} verify reset")
    assert app_area(sim_node(d, KATAPULT), 4000) == path.read_bytes()
    d.close()


def test_node_that_resets_into_a_silent_application_is_reported(tmp_path):
    path = image(tmp_path, 4000)
    d = driver(f"sim://can?node=katapult:{KATAPULT},app=silent,fault=reboot:10&throttle=0")
    d.ok(f"connect {KATAPULT}")
    error = d.error(f"program {path} verify")
    assert "did not answer SEND_BLOCK" in error and "written before that" in error
    assert "reset the board twice quickly" in error
    d.close()


def test_stuck_parser_is_named_in_the_error(tmp_path):
    path = image(tmp_path, 2000)
    d = driver(f"sim://can?node=katapult:{KATAPULT},stall=1,fault=drop:5&throttle=0")
    d.ok(f"connect {KATAPULT}")
    error = d.error(f"program {path} verify")
    assert "parser is stuck" in error
    node = sim_node(d, KATAPULT)
    assert node.state == "bootloader" and not node.logged("COMPLETE")
    d.close()


def test_silent_node_is_one_line_with_advice():
    d = driver(f"sim://can?node=katapult:{KATAPULT},fault=silent&throttle=0")
    error = d.error(f"connect {KATAPULT}")
    assert "\n" not in error
    assert f"no Katapult node {KATAPULT} answered" in error and "`query`" in error
    d.close()


def test_wrong_uuid_answer_is_refused():
    d = driver(f"sim://can?node=katapult:{KATAPULT},fault=baduuid&throttle=0")
    error = d.error(f"connect {KATAPULT}")
    assert f"asked for node {KATAPULT}" in error
    d.close()


def test_two_nodes_colliding_on_the_query_leaves_one_that_says_so():
    url = f"sim://can?node=katapult:{KATAPULT}&node=katapult:{KLIPPER},fault=collide&throttle=0"
    d = driver(url)
    nodes = d.ok("query --timeout 0.3")
    assert [n["uuid"] for n in nodes] == [KATAPULT]  # the other went bus-off
    error = d.error(f"connect {KLIPPER}")
    assert "\n" not in error and f"no Katapult node {KLIPPER} answered" in error
    d.ok(f"connect {KATAPULT}")
    d.close()


# ---------------------------------------------------------------------- bus errors


def test_unknown_can_interface_is_named():
    result = flashsh("--can-interface", "nosuch", "-c", "query --timeout 0.1")
    assert result.returncode == 1
    assert "python-can has no CAN interface 'nosuch'" in result.stderr


def test_missing_slcan_adapter_port_is_named():
    result = flashsh(
        "--can-interface", "slcan", "--can-channel", "/dev/flashsh-none", "-c", "query"
    )
    assert result.returncode == 1
    assert "cannot open /dev/flashsh-none" in result.stderr


def test_socketcan_without_can0_explains():
    result = flashsh("--can-channel", "flashshnone0", "-c", "query --timeout 0.1")
    assert result.returncode == 1
    message = result.stderr.strip()
    # Either the kernel has SocketCAN and no such interface, or no SocketCAN at all.
    assert (
        "there is no CAN interface flashshnone0" in message or "no SocketCAN support" in message
    ), message


@pytest.mark.parametrize(
    "code, words",
    [
        (errno.ENETDOWN, "can0 is down (bring it up: sudo ip link set can0 up type can"),
        (errno.ENOBUFS, "no node acknowledges them"),
    ],
)
def test_send_errors_say_what_to_do(code, words):
    import can

    exc = can.CanOperationError(f"Failed to transmit: [Errno {code}] x", error_code=code)
    assert words in str(send_error("can0", 1_000_000, exc))


def test_reset_refuses_a_blank_application_area():
    # COMPLETE jumps to the application without Katapult's blank check: it would hang.
    d = driver()
    d.ok(f"connect {KATAPULT}")
    error = d.error("reset")
    assert "flash at 0x08002000 is blank" in error
    node = sim_node(d, KATAPULT)
    assert node.state == "bootloader" and not node.logged("COMPLETE")
    d.close()


def test_flash_size_is_a_default_until_chip_names_the_part(tmp_path):
    path = image(tmp_path, 60000)
    url = f"sim://can?node=katapult:{KATAPULT},flash_kib=256&throttle=0"
    result = flashsh("--can-channel", url, "-c", f"program {path} verify", KATAPULT)
    assert result.returncode == 1
    assert "64 KiB is the stm32f103xe build's default" in result.stderr
    assert "--chip" in result.stderr
    result = flashsh(
        "--chip", "stm32f103rc", "--can-channel", url, "-c", f"program {path} verify", KATAPULT
    )
    assert result.returncode == 0, result.stderr
    assert "wrote 938 of 938 pages" in result.stdout


def klipper_build_image(tmp_path, mcu: str):
    import zlib

    dictionary = {"app": "Klipper", "version": "v0.12.0-1", "config": {"MCU": mcu}, "commands": {}}
    body = b"\x00\x50\x00\x20\x01\x21\x00\x08" + random.Random(9).randbytes(900)
    body += zlib.compress(json.dumps(dictionary).encode(), 9) + b"\xff" * 40
    path = tmp_path / "klipper.bin"
    path.write_bytes(body)
    return path


def test_klipper_built_for_another_mcu_is_refused(tmp_path):
    d = driver()
    d.ok(f"connect {KATAPULT}")
    error = d.error(f"program {klipper_build_image(tmp_path, 'stm32g0b1xx')} verify")
    assert "built for stm32g0b1xx, but this Katapult runs on stm32f103xe" in error
    assert app_area(sim_node(d, KATAPULT), 64) == b"\xff" * 64
    path = klipper_build_image(tmp_path, "stm32f103xe")
    d.ok(f"program {path} verify")
    assert app_area(sim_node(d, KATAPULT), path.stat().st_size) == path.read_bytes()
    d.close()
