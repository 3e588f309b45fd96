"""The pty server: opening the pty resets the board, the client's baud rate counts, and
``python -m flashsh.sims`` serves until SIGTERM, then dumps the flash."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import threading
import time

import pytest
import serial
from sim_helpers import sim_url

from flashsh.sims.pty import PtyServer
from flashsh.sims.stk500v1 import Stk500v1Sim
from flashsh.sims.url import parse_sim_url

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux ptys")


def xfer(port: serial.Serial, request: bytes, size: int) -> bytes:
    port.write(request)
    return port.read(size)


@pytest.fixture
def served():
    servers: list[tuple[PtyServer, threading.Thread]] = []

    def start(query: str = "", inotify: bool = True) -> PtyServer:
        sim = Stk500v1Sim.from_options(parse_sim_url(sim_url(query))[1], host_baud=None)
        server = PtyServer(sim, use_inotify=inotify)
        thread = threading.Thread(target=server.serve, daemon=True)
        thread.start()
        servers.append((server, thread))
        return server

    yield start
    for server, thread in servers:
        server.stop()
        thread.join(2)
        server.close()


def test_opening_the_pty_resets_the_board(served):
    server = served()
    mcu = server.sim.mcu
    time.sleep(0.05)
    # Nobody has the port open: optiboot went from power-on to the application.
    assert mcu.state == "application" and not server.client
    with serial.Serial(server.path, 115200, timeout=1.0) as port:
        assert xfer(port, b"\x30\x20", 2) == b"\x14\x10"
        assert mcu.resets["external"] == 1
    time.sleep(0.05)
    assert not server.client
    with serial.Serial(server.path, 115200, timeout=1.0) as port:
        assert xfer(port, b"\x75\x20", 5) == b"\x14\x1e\x95\x0f\x10"
    assert mcu.resets["external"] == 2 and server.opens == 2


def test_the_client_baud_rate_reaches_the_simulator(served):
    server = served()
    with serial.Serial(server.path, 57600, timeout=0.2) as port:
        assert xfer(port, b"\x30\x20", 2) == b""
        time.sleep(0.05)
        assert server.sim.to_target.tx_baud == 57600
    with serial.Serial(server.path, 115200, timeout=1.0) as port:
        assert xfer(port, b"\x30\x20", 2) == b"\x14\x10"


def test_no_slave_descriptor_is_kept_open(served):
    server = served()
    time.sleep(0.02)
    # POLLHUP on the master means no process, this one included, holds the slave.
    poller = select.poll()
    poller.register(server.master, select.POLLIN)
    assert dict(poller.poll(0)).get(server.master, 0) & select.POLLHUP
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor is gone
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
    assert server.path not in targets


def test_close_and_instant_reopen_is_still_a_reset(served):
    server = served()
    if server.watch is None:
        pytest.skip("inotify not available: the poll fallback can miss a quick reopen")
    port = serial.Serial(server.path, 115200, timeout=1.0)
    assert xfer(port, b"\x30\x20", 2) == b"\x14\x10"
    port.write(bytes.fromhex("40 81 00 20"))  # no terminator: into the application
    assert server.sim.mcu.wait_for_state("application")
    port.close()
    with serial.Serial(server.path, 115200, timeout=1.0) as port:
        assert xfer(port, b"\x30\x20", 2) == b"\x14\x10"
    assert server.opens == 2


def test_polling_fallback_sees_the_open(served):
    server = served(inotify=False)
    assert server.watch is None
    time.sleep(0.02)
    with serial.Serial(server.path, 115200, timeout=1.0) as port:
        assert xfer(port, b"\x30\x20", 2) == b"\x14\x10"
    assert server.sim.mcu.resets["external"] == 1


def test_module_cli_serves_and_dumps_on_sigterm(tmp_path):
    image = tmp_path / "app.bin"
    image.write_bytes(b"\xab" * 256)
    dump = tmp_path / "dump.bin"
    proc = subprocess.Popen(
        [sys.executable, "-m", "flashsh.sims", "stk500v1", "--chip", "atmega328p",
         "--throttle", "0", "--image", str(image), "--dump", str(dump)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        path = proc.stdout.readline().strip()
        assert path.startswith("/dev/")
        with serial.Serial(path, 115200, timeout=1.0) as port:
            time.sleep(0.05)
            assert xfer(port, bytes.fromhex("55 80 00 20"), 2) == b"\x14\x10"
            page = bytes.fromhex("64 00 04 46 01 02 03 04 20")
            assert xfer(port, page, 2) == b"\x14\x10"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0, proc.stderr.read()
    flash = dump.read_bytes()
    assert len(flash) == 0x8000
    assert flash[:0x100] == b"\xab" * 256
    assert flash[0x100:0x104] == b"\x01\x02\x03\x04"
    assert flash[0x104:0x7E00] == b"\xff" * (0x7E00 - 0x104)
    assert flash[0x7E00:0x7E0D] == b"optiboot 8.3 "


def test_module_cli_rejects_unknown_options():
    proc = subprocess.run(
        [sys.executable, "-m", "flashsh.sims", "stk500v1", "-o", "colour=blue"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "unknown option 'colour'" in proc.stderr and proc.stdout == ""
