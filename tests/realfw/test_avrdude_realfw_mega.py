"""Debian's avrdude against the real bootloaders of the big AVRs, in simavr.

* ``stk500v2_mega2560``: Arduino Mega 2560 (stk500v2 "wiring" bootloader,
  115200 baud, boot section 0x3E000);
* ``atmegaboot1280``: Arduino Mega with the ATmega1280 (ATmegaBOOT, STK500v1,
  57600 baud, boot section 0x1F000).

The images cross the 64 KiB (RAMPZ) and, on the 2560, 128 KiB (EIND /
extended address) boundaries.  The flash dump taken when the simulation stops
must hold exactly the image, erased flash up to the boot section, and the
untouched bootloader.  The second half pins down what these bootloaders do on
their own (timeouts, the watchdog, the "!!!" monitor), as listed in
tests/harness/firmware.py.
"""

from __future__ import annotations

import functools
import operator
import random
import shutil
import subprocess
import time

import pytest
import serial
from harness.firmware import flash_image

pytestmark = pytest.mark.debian

# ldi r16,0x18; sts WDTCSR,r16; ldi r16,0x08; sts WDTCSR,r16; rjmp .-2
# = watchdog on, 16 ms, then spin: an application that resets through the watchdog
WATCHDOG_APP = bytes.fromhex("08e1 00936000 08e0 00936000 ffcf")
# nop x4; rjmp .-2: a programmed application word 0 that just spins
SPIN_APP = bytes.fromhex("0000 0000 0000 0000 ffcf")


@pytest.fixture(scope="module")
def avrdude() -> str:
    path = shutil.which("avrdude")
    if not path:
        pytest.skip("avrdude not installed (Debian package avrdude)")
    return path


def run_avrdude(avrdude, bl, port, programmer, *ops: str):
    cmd = [avrdude, "-p", bl.avrdude_part, "-c", programmer, "-P", port, "-b", str(bl.baud), "-D"]
    t0 = time.monotonic()
    proc = subprocess.run([*cmd, *ops], capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, f"{' '.join(proc.args)}\n{proc.stdout}{proc.stderr}"
    return proc, elapsed


def check_flash(flash: bytes, bl, image: bytes) -> None:
    """Application area = image then erased; boot section = the bootloader's hex."""
    assert len(flash) == bl.flash_size
    assert flash[: len(image)] == image
    assert flash[len(image) : bl.boot_start] == b"\xff" * (bl.boot_start - len(image))
    expected_boot = flash_image(bl.hex_path, bl.flash_size)[bl.boot_start :]
    assert flash[bl.boot_start :] == expected_boot, "bootloader section changed"


def random_image(seed: str, size: int) -> bytes:
    """Random bytes with a few "!!!" runs (the stk500v2 monitor trigger) and 0x1B (ESC)."""
    image = bytearray(random.Random(seed).randbytes(size))
    for at in (0x100, 0xFFFE, 0x1FFFF):
        if at + 3 <= size:
            image[at : at + 3] = b"!!!"
    image[0x200:0x204] = b"\x1b\x1b\x0e\x1b"
    return bytes(image)


def test_avrdude_wiring_programs_132k_on_mega2560(avr_sim, avrdude, tmp_path, record_property):
    # 0x21000 + 77 bytes: crosses 64 KiB and 128 KiB, ends in a partial page
    image = random_image("mega2560", 0x21000 + 77)
    img = tmp_path / "img.bin"
    img.write_bytes(image)
    sim = avr_sim("stk500v2_mega2560")
    bl = sim.bootloader

    proc, t_write = run_avrdude(avrdude, bl, sim.pty, "wiring", "-U", f"flash:w:{img}:r")
    assert "device signature = 0x1e9801" in proc.stderr
    assert f"{len(image)} bytes of flash verified" in proc.stderr
    # CMD_LEAVE_PROGMODE_ISP: about 100 ms later the bootloader jumps to 0x0000
    sim.wait_for_log(r"application entered at 0x0000", timeout=3)

    # Opening the port again resets the board into the bootloader.
    proc, t_verify = run_avrdude(avrdude, bl, sim.pty, "wiring", "-U", f"flash:v:{img}:r")
    assert f"{len(image)} bytes of flash verified" in proc.stderr

    check_flash(sim.stop(), bl, image)
    assert sim.log.count("external reset (port opened)") == 2
    record_property("avrdude_2560_132k_write_verify_s", round(t_write, 2))
    record_property("avrdude_2560_132k_verify_s", round(t_verify, 2))
    print(f"avrdude -c wiring 132 KiB write+verify {t_write:.1f} s, verify-only {t_verify:.1f} s")


def test_avrdude_arduino_programs_72k_on_atmegaboot1280(
    avr_sim, avrdude, tmp_path, record_property
):
    # 0x12000 + 100 bytes: crosses 64 KiB (RAMPZ = 1 above it), ends in a partial page
    image = random_image("mega1280", 0x12000 + 100)
    img = tmp_path / "img.bin"
    img.write_bytes(image)
    sim = avr_sim("atmegaboot1280")
    bl = sim.bootloader

    proc, elapsed = run_avrdude(avrdude, bl, sim.pty, "arduino", "-U", f"flash:w:{img}:r")
    assert "device signature = 0x1e9703" in proc.stderr
    assert f"{len(image)} bytes of flash verified" in proc.stderr
    check_flash(sim.stop(), bl, image)
    record_property("avrdude_1280_72k_write_verify_s", round(elapsed, 2))
    print(f"avrdude -c arduino 72 KiB write+verify on ATmegaBOOT 1280: {elapsed:.1f} s")


# ---------------------------------------------------------------------------
# What the bootloaders do by themselves (raw bytes on the pty, harness log).


def v2_frame(seq: int, body: bytes) -> bytes:
    head = bytes([0x1B, seq, len(body) >> 8, len(body) & 0xFF, 0x0E]) + body
    return head + bytes([functools.reduce(operator.xor, head, 0)])


def v2_xfer(port: serial.Serial, seq: int, body: bytes) -> bytes:
    """One STK500v2 message; returns the answer body (b"" if none)."""
    port.reset_input_buffer()
    port.write(v2_frame(seq, body))
    head = port.read(5)
    if len(head) < 5:
        return b""
    rest = port.read((head[2] << 8 | head[3]) + 1)
    assert functools.reduce(operator.xor, head + rest, 0) == 0, "bad checksum"
    assert head[1] == seq
    return rest[:-1]


SIGN_ON = b"\x01\x00\x08AVRISP_2"


def seconds_between(sim, first: str, then: str, after: float = 0.0) -> float:
    """From the last log event starting with ``first`` to the first ``then`` (after ``after``)."""
    events = sim.events()
    t_then = next(t for t, msg in events if msg.startswith(then) and t >= after)
    t_first = max(t for t, msg in events if msg.startswith(first) and t <= t_then)
    return t_then - t_first


def test_mega2560_empty_application_loops_back_into_the_bootloader(avr_sim):
    sim = avr_sim("stk500v2_mega2560", park_app=False)
    # No byte for ~0.83 s: jump to 0x0000 even though the flash is empty; the
    # erased flash (0xFFFF) runs up into the boot section, which starts over.
    log = sim.wait_for_log(r"boot section entered at 0x3e000 from the application", 2, 4)
    assert log.count("watchdog reset") == 0
    assert 0.75 < seconds_between(sim, "external reset", "application entered at 0x0000") < 1.0
    with serial.Serial(sim.pty, 115200, timeout=0.5) as port:
        time.sleep(0.2)
        assert v2_xfer(port, 1, b"\x01") == SIGN_ON
        entries = sim.log.count("application entered")
        # Once a byte was received, an empty application (word 0 = 0xFFFF)
        # keeps it in the bootloader for good: it still answers 6 s later.
        time.sleep(6)
        assert v2_xfer(port, 2, b"\x03\x90") == b"\x03\x00\x0f"  # HW_VER 15: the bootloader
    assert sim.log.count("application entered") == entries


def test_mega2560_leaves_after_5_s_of_silence_when_an_application_exists(avr_sim, tmp_path):
    app = tmp_path / "app.bin"
    app.write_bytes(SPIN_APP)
    sim = avr_sim("stk500v2_mega2560", app=app, verbose=2)
    with serial.Serial(sim.pty, 115200, timeout=0.5) as port:
        time.sleep(0.2)
        assert v2_xfer(port, 1, b"\x01") == SIGN_ON
        sim.wait_for_log(r"application entered at 0x0000, parked", timeout=7)
    assert 4.5 < seconds_between(sim, "rx ", "application entered") < 5.6


def test_mega2560_watchdog_reset_jumps_to_0x20000(avr_sim, tmp_path):
    """The shipped build's WDRF branch calls app_start with EICALL while EIND = 1."""
    app = tmp_path / "wdt.bin"
    app.write_bytes(WATCHDOG_APP)
    sim = avr_sim("stk500v2_mega2560", app=app, park_app=False)
    log = sim.wait_for_log(r"application entered at 0x0000", count=2, timeout=4)
    lines = [m for _, m in sim.events()]
    first = lines.index("watchdog reset")
    assert lines[first : first + 4] == [
        "watchdog reset",
        "application entered at 0x20000",  # not 0x0000: word address EIND:Z = 0x10000
        "boot section entered at 0x3e000 from the application",  # up the erased flash
        "application entered at 0x0000",  # after the ~0.83 s wait for a first byte
    ]
    t_reset = next(t for t, m in sim.events() if m == "watchdog reset")
    waited = seconds_between(sim, "boot section entered", "application entered at 0x0000", t_reset)
    assert 0.75 < waited < 1.0
    assert "core stopped" not in log


def test_mega2560_monitor_reads_its_banner_from_the_wrong_64k_bank(avr_sim):
    sim = avr_sim("stk500v2_mega2560")
    with serial.Serial(sim.pty, 115200, timeout=1) as port:
        time.sleep(0.2)
        port.write(b"!!!")  # within the first 10 bytes: the monitor starts
        out = port.read(400)
        # five lines of '!', then the banner is read through a 16-bit pointer
        # from 0x0xxxx instead of 0x3xxxx: erased flash, 0xFF without end
        assert out.startswith(b"!" * 25 + b"\r\n")
        assert out.count(b"!" * 25 + b"\r\n") == 5
        assert out[5 * 27 :] == b"\xff" * (400 - 5 * 27)
        port.write(b"Q")  # not even read: the monitor is stuck printing
        time.sleep(0.3)
        assert port.read(64) == b"\xff" * 64
    # Only a reset gets out: opening the port again is one (the harness needs
    # a moment without a client to see the close).
    time.sleep(0.1)
    with serial.Serial(sim.pty, 115200, timeout=0.5) as port:
        time.sleep(0.2)
        port.reset_input_buffer()
        assert v2_xfer(port, 7, b"\x01") == SIGN_ON


def test_mega2560_erases_by_its_own_page_counter_not_the_loaded_address(avr_sim):
    sim = avr_sim("stk500v2_mega2560")
    program = b"\x13\x01\x00\xc1\x0a\x40\x4c\x20\x00\x00"
    load_0x1000 = b"\x06\x80\x00\x08\x00"  # word address 0x800, bit 31 as avrdude sets it
    with serial.Serial(sim.pty, 115200, timeout=1) as port:
        time.sleep(0.2)
        assert v2_xfer(port, 1, b"\x01") == SIGN_ON
        assert v2_xfer(port, 2, b"\x10\xc8\x64\x19\x20\x00\x53\x03\xac\x53\x00\x00") == b"\x10\x00"
        assert v2_xfer(port, 3, load_0x1000) == b"\x06\x00"
        assert v2_xfer(port, 4, program + b"\x0f" * 256) == b"\x13\x00"  # erases page 0x0000
        assert v2_xfer(port, 5, load_0x1000) == b"\x06\x00"
        assert v2_xfer(port, 6, program + b"\xf0" * 256) == b"\x13\x00"  # erases page 0x0100
        assert v2_xfer(port, 7, load_0x1000) == b"\x06\x00"
        # the second write went on top of the first: 0x0f AND 0xf0
        assert v2_xfer(port, 8, b"\x14\x01\x00\x20") == b"\x14\x00" + b"\x00" * 256 + b"\x00"
    flash = sim.stop()
    assert flash[0x1000:0x1100] == b"\x00" * 256
    assert flash[:0x1000] == b"\xff" * 0x1000
    assert sim.log.count("page 0x01000 written over unerased data") == 1


def test_atmegaboot1280_start_and_byte_timeout(avr_sim):
    sim = avr_sim("atmegaboot1280", park_app=False, verbose=2)
    # empty flash: after ~1.3 s the bootloader jumps to 0x0000 anyway and
    # the erased flash leads back into it
    sim.wait_for_log(r"boot section entered at 0x1f000 from the application", timeout=4)
    assert 1.2 < seconds_between(sim, "external reset", "application entered at 0x0000") < 1.6
    with serial.Serial(sim.pty, 57600, timeout=0.5) as port:
        time.sleep(0.1)
        port.write(b"0 ")
        assert port.read(2) == b"\x14\x10"
        time.sleep(0.05)
        t_sync = max(t for t, m in sim.events() if m.startswith("tx "))
        sim.wait_for_log(r"application entered", count=2, timeout=3)
    assert 1.2 < seconds_between(sim, "rx ", "application entered", t_sync) < 1.6


def test_atmegaboot1280_watchdog_reset_loop_until_external_reset(avr_sim, tmp_path):
    """No WATCHDOG_MODS in the Mega build: the bootloader leaves the watchdog running."""
    app = tmp_path / "wdt.bin"
    app.write_bytes(WATCHDOG_APP)
    sim = avr_sim("atmegaboot1280", app=app, park_app=False)
    sim.wait_for_log(r"watchdog reset", count=20, timeout=4)
    events = sim.events()
    resets = [t for t, m in events if m == "watchdog reset"]
    assert sum(m.startswith("application entered") for _, m in events) == 1
    gaps = [b - a for a, b in zip(resets, resets[1:], strict=False)]
    assert max(gaps) < 0.03  # 16 ms watchdog, forever in the bootloader
    # An external reset (opening the port = DTR) clears the watchdog.
    with serial.Serial(sim.pty, 57600, timeout=0.5) as port:
        time.sleep(0.1)
        for _ in range(3):
            port.reset_input_buffer()
            port.write(b"0 ")
            assert port.read(2) == b"\x14\x10"
            time.sleep(0.2)
        n_resets = sim.log.count("watchdog reset")
        time.sleep(0.3)
        assert sim.log.count("watchdog reset") == n_resets
