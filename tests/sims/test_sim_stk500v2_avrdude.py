"""Debian's avrdude against the STK500v2 simulators served on a pseudo-terminal.

``-c wiring`` programs the Mega 2560 bootloader model (images past 128 KiB, no throttle,
and one small image at real speed); ``-c stk500v2`` drives the ISP programmer model with
an ATmega328P behind it: fuses, flash, chip erase and lock bits, and the simulated chip
must then hold what avrdude reported.

A pty has no modem lines: avrdude's DTR/RTS calls fail with "Inappropriate ioctl" and
are harmless. The server takes the client's open as the DTR edge, which resets the Mega
and does nothing to the programmer.
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import sys
import threading
import time

import pytest

from flashsh.sims import sim_class
from flashsh.sims.pty import PtyServer
from flashsh.sims.url import parse_sim_url

pytestmark = pytest.mark.debian


@pytest.fixture(scope="module")
def avrdude() -> str:
    path = shutil.which("avrdude")
    if not path:
        pytest.skip("avrdude not installed (Debian package avrdude)")
    return path


@pytest.fixture
def served():
    """``served(query)`` -> (sim, pty path): the simulator behind a pty, in this process."""
    running: list[tuple[PtyServer, threading.Thread]] = []

    def serve(query: str):
        protocol, options = parse_sim_url("sim://stk500v2?" + query)
        sim = sim_class(protocol).from_options(options, host_baud=None)
        server = PtyServer(sim)
        thread = threading.Thread(target=server.serve, daemon=True)
        thread.start()
        running.append((server, thread))
        return sim, server.path

    yield serve
    for server, thread in running:
        server.stop()
        thread.join(2.0)
        server.close()


def run(avrdude: str, args: list[str], *, ok: bool = True) -> tuple[str, float]:
    """Run avrdude; return its output and how long it took."""
    t0 = time.monotonic()
    proc = subprocess.run([avrdude, *args], capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - t0
    output = proc.stdout + proc.stderr
    assert (proc.returncode == 0) == ok, f"avrdude {' '.join(args)}\n{output}"
    return output, elapsed


def wiring(port: str) -> list[str]:
    return ["-p", "m2560", "-c", "wiring", "-P", port, "-b", "115200", "-D"]


def isp(port: str, *extra: str) -> list[str]:
    return ["-p", "m328p", "-c", "stk500v2", "-P", port, *extra]


def hex_values(output: str) -> list[int]:
    """The values ``-U mem:r:-:h`` printed, in order."""
    return [int(v, 16) for v in re.findall(r"^(0x[0-9a-f]+)$", output, re.M)]


# ---------------------------------------------------------------------- wiring


def test_wiring_writes_and_verifies_160k(avrdude, served, tmp_path, record_property):
    image = random.Random(2560).randbytes(160 * 1024)
    path = tmp_path / "img.bin"
    path.write_bytes(image)
    sim, port = served("throttle=0")
    out, t_write = run(avrdude, [*wiring(port), "-U", f"flash:w:{path}:r"])
    assert f"{len(image)} bytes of flash verified" in out
    out, t_verify = run(avrdude, [*wiring(port), "-U", f"flash:v:{path}:r"])
    assert f"{len(image)} bytes of flash verified" in out
    flash = sim.flash
    assert flash[: len(image)] == image
    assert flash[len(image) : 0x3E000] == b"\xff" * (0x3E000 - len(image))
    assert flash[0x3E000:0x3E00E] == b"stk500boot_v2 "
    assert sim.mcu.resets.get("external") == 2  # each open reset the board
    record_property("wiring_160k_write_verify_s", round(t_write, 2))
    record_property("wiring_160k_verify_s", round(t_verify, 2))


def test_wiring_at_real_speed(avrdude, served, tmp_path, record_property):
    image = random.Random(4).randbytes(4096)
    path = tmp_path / "img.bin"
    path.write_bytes(image)
    sim, port = served("throttle=1")
    out, elapsed = run(avrdude, [*wiring(port), "-U", f"flash:w:{path}:r"])
    assert "4096 bytes of flash verified" in out
    assert sim.flash[:4096] == image
    # 16 pages: each 272 bytes on the wire (23.6 ms) plus 8.2 ms erase and write,
    # then 16 reads of 262 bytes back; below that the line model is not working.
    assert elapsed > 16 * 0.0318 + 16 * 0.0227
    record_property("wiring_4k_real_speed_s", round(elapsed, 2))
    # LEAVE_PROGMODE: the application starts (state check) 50 ms later.
    assert sim.mcu.wait_for_state("application", 2.0)


def test_wiring_without_d_fails_at_the_chip_erase(avrdude, served, tmp_path):
    path = tmp_path / "img.bin"
    path.write_bytes(bytes(256))
    sim, port = served("throttle=0")
    args = [a for a in wiring(port) if a != "-D"]
    out, _ = run(avrdude, [*args, "-U", f"flash:w:{path}:r"], ok=False)
    assert "erasing chip" in out
    assert sim.flash[:256] == b"\xff" * 256


# ---------------------------------------------------------------------- ISP


def test_isp_fuses_written_and_read_back(avrdude, served):
    sim, port = served("mode=isp&chip=atmega328p&throttle=0")
    out, _ = run(avrdude, isp(port, "-U", "lfuse:r:-:h", "-U", "hfuse:r:-:h", "-U", "efuse:r:-:h"))
    assert hex_values(out) == [0x62, 0xD9, 0xFF]  # factory values
    writes = ["-U", "lfuse:w:0xff:m", "-U", "hfuse:w:0xde:m", "-U", "efuse:w:0xfd:m"]
    out, _ = run(avrdude, isp(port, *writes))
    assert out.count("1 byte of") >= 3 and "verified" in out
    out, _ = run(avrdude, isp(port, "-U", "lfuse:r:-:h", "-U", "hfuse:r:-:h", "-U", "efuse:r:-:h"))
    assert hex_values(out) == [0xFF, 0xDE, 0xFD]
    assert sim.fuses == (0xFF, 0xDE, 0xFD)


def test_isp_flash_write_verify_and_chip_erase(avrdude, served, tmp_path, record_property):
    image = random.Random(328).randbytes(28 * 1024)
    path = tmp_path / "img.bin"
    path.write_bytes(image)
    sim, port = served("mode=isp&chip=atmega328p&throttle=0")
    out, elapsed = run(avrdude, isp(port, "-U", f"flash:w:{path}:r"))
    assert "erasing chip" in out and f"{len(image)} bytes of flash verified" in out
    assert sim.flash[: len(image)] == image
    out, _ = run(avrdude, isp(port, "-U", f"flash:v:{path}:r"))
    assert f"{len(image)} bytes of flash verified" in out
    record_property("isp_28k_write_verify_s", round(elapsed, 2))
    run(avrdude, isp(port, "-e"))
    assert sim.flash == b"\xff" * 0x8000
    assert sim.target is not None and sim.target.stats.chip_erases == 2


def test_isp_lock_bits(avrdude, served, tmp_path):
    path = tmp_path / "img.bin"
    path.write_bytes(bytes(range(256)) * 4)
    sim, port = served(f"mode=isp&chip=atmega328p&throttle=0&image={path}")
    out, _ = run(avrdude, isp(port, "-U", "lock:w:0x0f:m", "-U", "lock:r:-:h"))
    assert "1 byte of lock verified" in out
    assert hex_values(out) == [0xCF]
    assert sim.lock == 0xCF
    # Mode 3 (LB1 and LB2): avrdude reads back 0xCC, flash no longer verifies.
    out, _ = run(avrdude, isp(port, "-U", "lock:w:0x3c:m"), ok=False)
    assert "0xcc != input 0x3c" in out
    assert sim.lock == 0xCC
    out, _ = run(avrdude, isp(port, "-U", f"flash:v:{path}:r"), ok=False)
    assert "verification mismatch" in out
    # Fuses are locked too.
    run(avrdude, isp(port, "-U", "lfuse:w:0xff:m"), ok=False)
    assert sim.fuses[0] == 0x62
    # Only a chip erase unlocks, and it takes the flash with it.
    out, _ = run(avrdude, isp(port, "-e", "-U", "lock:r:-:h"))
    assert hex_values(out) == [0xFF]
    assert sim.lock == 0xFF and sim.flash[:1024] == b"\xff" * 1024


def test_isp_sck_too_fast_for_a_factory_chip(avrdude, served):
    sim, port = served("mode=isp&chip=atmega328p&throttle=0")
    out, _ = run(avrdude, isp(port, "-B", "1", "-U", "signature:r:-:h"), ok=False)
    assert "initialization failed" in out
    # The programmer keeps the SCK setting: without -B the next run fails as well.
    run(avrdude, isp(port, "-U", "signature:r:-:h"), ok=False)
    # Slower again, then lfuse 0xff: the board's 16 MHz crystal runs the part and a
    # 1 us SCK works.
    run(avrdude, isp(port, "-B", "10", "-U", "lfuse:w:0xff:m"))
    out, _ = run(avrdude, isp(port, "-B", "1", "-U", "signature:r:-:h"))
    assert "device signature = 0x1e950f" in out


def test_isp_eeprom(avrdude, served, tmp_path):
    data = random.Random(1).randbytes(1024)
    path = tmp_path / "ee.bin"
    path.write_bytes(data)
    sim, port = served("mode=isp&chip=atmega328p&throttle=0")
    out, _ = run(avrdude, isp(port, "-U", f"eeprom:w:{path}:r"))
    assert "1024 bytes of eeprom verified" in out
    assert sim.eeprom == data


def test_served_from_the_command_line(avrdude):
    cmd = [sys.executable, "-m", "flashsh.sims", "stk500v2", "--chip", "atmega328p"]
    cmd += ["--throttle", "0", "-o", "mode=isp", "-o", "lock=0f"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as server:
        assert server.stdout is not None
        port = server.stdout.readline().strip()
        try:
            assert port.startswith("/dev/"), port
            out, _ = run(avrdude, isp(port, "-U", "signature:r:-:h", "-U", "lock:r:-:h"))
            assert "device signature = 0x1e950f" in out
            assert hex_values(out)[-1] == 0xCF
        finally:
            server.terminate()
            server.communicate(timeout=10)
