"""A SAM board in its SAM-BA monitor: ``sim://samba?chip=NAME``.

The chip (:mod:`flashsh.sims.samba_chips`) carries its memories and flash controller
(:mod:`flashsh.sims.samba_eefc`, :mod:`flashsh.sims.samba_nvm`); the monitor
(:mod:`flashsh.sims.samba_monitor`) runs in its own thread as the firmware's main loop,
and ``G`` runs uploaded code in :mod:`flashsh.sims.thumb`.

The link is USB-CDC (``link=usb``, the default: the host's baud rate means nothing, one
64-byte packet per 1 ms frame, as flashsh.sims.katapult) or a UART (``link=uart``: the
ROM's UART0 or the Zero bootloader's SERCOM at ``baud``, XMODEM-CRC for ``S``/``R``).
uf2-samdx1 builds have no UART monitor (``USE_UART 0`` in its inc/uf2.h).

A reset (AIRCR SYSRESETREQ, RSTC_CR, NVMCTRL SWRST, the reset button) drops the link
and boots the chip again: SAM3X/SAM4E run flash only with GPNVM1 set, else the ROM
monitor; the Arduino Zero bootloader starts a sketch whose first word is not erased,
uf2-samdx1 one whose reset vector lies in the application area, both after their 500 ms
double-tap wait (bootloaders/zero/main.c ``check_start_application``, uf2-samdx1
src/main.c). A started application is silent; ``booted`` records it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from flashsh.sims.board import number_option
from flashsh.sims.faults import Faults, fault_count
from flashsh.sims.samba_bus import Context, Event
from flashsh.sims.samba_chips import CHIPS, Chip, build
from flashsh.sims.samba_monitor import Crashed, Monitor, Variant, words_at
from flashsh.sims.wire import Wire

USB_PACE_BAUD = 640_000  # one 64-byte packet per 1 ms USB frame, as 10-bit bytes
UART_BAUD = 115_200
PACKET = 64
DOUBLE_TAP_WAIT = 0.5
ZERO_DOUBLE_TAP = (0x20007FFC, 0x07738135)  # bootloaders/zero main.c, Zero board defs
UF2_DOUBLE_TAP, UF2_QUICK_BOOT = 0xF01669EF, 0xF02669EF  # uf2-samdx1 inc/uf2.h

# Version strings. The Arduino and uf2 formats are the sources' (samba.md §4); build
# dates and the ROM strings are stand-ins (exact ROM strings UNCONFIRMED).
VERSIONS = {
    "rom": b"v1.1 Dec 15 2010 19:25:04\n\r",
    "XYZ": b"v2.0 [Arduino:XYZ] Mar 19 2018 09:45:14\n\r",
    "XYZP": b"v2.0 [Arduino:XYZP] Jan 12 2021 10:00:00\n\r",
    "uf2": b"v1.1 [Arduino:XYZ] Jun 16 2020 16:21:41\n\r\0",
}

OPTIONS = {
    "chip": f"{', '.join(CHIPS)} (default atsamd21g18a)",
    "link": "usb (default; baud ignored) or uart (XMODEM for S/R)",
    "baud": "uart: the monitor's rate (default 115200)",
    "throttle": "1 = real time (default), 0 = no delays",
    "image": "file in flash before the start (.bin at the application start)",
    "bootprot": "SAMD: BOOTPROT field of the user row (SAMD21 0-7, default 2; "
    "SAMD51 0-15, default 13)",
    "gpnvm": "SAM3X/SAM4E: initial GPNVM bits as a number (default 0: boot the ROM)",
    "security": "1: security bit set (Arduino XYZP build: reads hidden, G refused)",
    "tag": "SAMD21: XYZ (default, 2018 build) or XYZP (security-aware build)",
    "goack": "ROM on a UART: 1 sends 0x06 after G like the Arduino monitors (default 0)",
    "erase_ms": "override erase time: SAM3X/SAM4E plane erase, SAMD row/block erase",
    "usb_id": "VID:PID the monitor enumerates as (default per chip)",
    "fault": "drop:N corrupt:N stop:N dead rxdrop:N rxcorrupt:N packet xcrc:N "
    "xnak:N hang:N (repeatable)",
}

LINE_FAULTS = ("drop", "corrupt", "stop", "dead")
COUNTED = ("rxdrop", "rxcorrupt", "xcrc", "xnak", "hang")


class _Reset(BaseException):
    """Unwinds the firmware thread to the reset vector (BaseException: a reset is not
    a fault the Thumb interpreter or the monitor may catch)."""

    def __init__(self, why: str) -> None:
        self.why = why


class _Stop(BaseException):
    pass


@dataclass
class SambaFaults:
    line: Faults = field(default_factory=Faults)
    counted: dict[str, set[int]] = field(default_factory=lambda: {k: set() for k in COUNTED})
    packet: bool = False
    seen: dict[str, int] = field(default_factory=lambda: {k: 0 for k in COUNTED})

    @classmethod
    def parse(cls, specs: list[str]) -> SambaFaults:
        faults = cls()
        for item in (part.strip() for spec in specs for part in spec.split(",")):
            if not item:
                continue
            kind, _, arg = item.partition(":")
            kind = kind.lower()
            if kind in LINE_FAULTS:
                faults.line.add(item)
            elif kind == "packet":
                faults.packet = True
            elif kind in COUNTED:
                faults.counted[kind].add(fault_count(item, kind, arg))
            else:
                raise ValueError(f"unknown fault {item!r} for SAM-BA; valid: {OPTIONS['fault']}")
        return faults

    def hit(self, kind: str) -> bool:
        self.seen[kind] += 1
        return self.seen[kind] in self.counted[kind]


class SambaBoard:
    """A SAM board whose monitor answers on a serial port."""

    protocol = "samba"
    OPTIONS = OPTIONS

    def __init__(
        self, options: dict[str, list[str]] | None = None, *, host_baud: int | None = None
    ) -> None:
        options = options or {}
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ValueError(
                f"unknown option {unknown[0]!r} for sim://samba; valid: {', '.join(OPTIONS)}"
            )
        one = {name: values[-1] for name, values in options.items()}
        self.link = one.get("link", "usb").lower()
        if self.link not in ("usb", "uart"):
            raise ValueError(f"option link={self.link!r}: usb or uart")
        self.throttle = number_option("throttle", one.get("throttle", "1"))
        self.baud = int(number_option("baud", one.get("baud", str(UART_BAUD))))
        if self.baud <= 0:
            raise ValueError("option baud must be positive")
        name = one.get("chip", "atsamd21g18a").lower()
        if name not in CHIPS:
            raise ValueError(f"option chip={name!r}; valid: {', '.join(CHIPS)}")
        self.faults = SambaFaults.parse(options.get("fault", []))
        self.ctx = Context(self.throttle, time.monotonic)
        erase = one.get("erase_ms")
        erase_s = None if erase is None else number_option("erase_ms", erase) / 1000
        gpnvm = int(one.get("gpnvm", "0"), 0)
        self.chip: Chip = build(name, self.ctx, gpnvm=gpnvm, erase_timing=erase_s)
        self.chip.on_reset = self._software_reset
        spec = self.chip.spec
        if spec.monitor == "uf2" and self.link == "uart":
            raise ValueError("uf2-samdx1 has no UART monitor (USE_UART 0): use link=usb")
        self._usb_id = one.get("usb_id", spec.usb_id).lower()
        self.variant = self._variant(one)
        self.security = one.get("security", "0") not in ("0", "")
        if "bootprot" in one:
            self._set_bootprot(int(one["bootprot"], 0))
        if self.chip.nvm is not None:
            self.chip.nvm.security = self.security
            self.chip.nvm.reset()
        if "image" in one:
            self.load_image(one["image"])
        if self.link == "usb":
            self.to_target = Wire(USB_PACE_BAUD, USB_PACE_BAUD, throttle=self.throttle)
            self.to_host = Wire(USB_PACE_BAUD, USB_PACE_BAUD, throttle=self.throttle)
        else:
            host = host_baud or self.baud
            self.to_target = Wire(host, self.baud, throttle=self.throttle)
            self.to_host = Wire(self.baud, host, throttle=self.throttle)
        self.state = "reset"
        self.monitor: Monitor | None = None
        #: One entry per boot into the application: (SP, reset handler) it found.
        self.booted: list[tuple[int, int]] = []
        self.resets: list[str] = []
        self._reset_request: str | None = None
        self._cond = threading.Condition()
        self._stop = False
        self._tx_count = 0
        self._rx_count = 0
        self._thread = threading.Thread(target=self._firmware, name="sim-samba", daemon=True)

    @classmethod
    def from_options(cls, options: dict[str, list[str]], host_baud: int | None) -> SambaBoard:
        return cls(options, host_baud=host_baud)

    def _variant(self, one: dict[str, str]) -> Variant:
        spec = self.chip.spec
        if spec.monitor == "rom":
            return Variant(
                "rom",
                VERSIONS["rom"],
                go_ack=one.get("goack", "0") not in ("0", ""),
                flash_r_zeros=spec.family == "sam3x",
            )
        if spec.monitor == "uf2":
            return Variant(
                "uf2",
                VERSIONS["uf2"],
                terminal=False,
                xyz=True,
                usb_r_ram_only=True,
                ff_skips_packet=True,
            )
        tag = one.get("tag", "XYZ").upper()
        if tag not in ("XYZ", "XYZP"):
            raise ValueError(f"option tag={tag!r}: XYZ or XYZP")
        return Variant(
            "zero",
            VERSIONS[tag],
            xyz=True,
            secure_aware=tag == "XYZP",
            usb_r_ram_only=True,
            xmodem_cancel=True,
        )

    def _set_bootprot(self, value: int) -> None:
        spec = self.chip.spec
        user = self.chip.user
        if spec.family == "samd21" and 0 <= value <= 7:
            user[0] = (user[0] & ~7) | value
        elif spec.family == "samd51" and 0 <= value <= 15:
            word = int.from_bytes(user[0:4], "little") & ~(0xF << 26) | value << 26
            user[0:4] = word.to_bytes(4, "little")
        else:
            raise ValueError(f"option bootprot={value} does not fit {spec.name}")

    def load_image(self, path: str) -> None:
        """Program ``path`` into flash as if done earlier (.bin at the application
        start). Raises ValueError."""
        from flashsh.errors import FlashshError
        from flashsh.images.load import load_image

        spec = self.chip.spec
        try:
            image = load_image(path, default_address=self.chip.app_start)
        except FlashshError as exc:
            raise ValueError(str(exc)) from None
        for segment in image.segments:
            at = segment.address - spec.flash_base
            if at < 0 or at + len(segment.data) > spec.flash_size:
                raise ValueError(f"image {Path(path).name} does not fit the flash of {spec.name}")
            self.chip.flash[at : at + len(segment.data)] = segment.data

    # ------------------------------------------------------------------ SerialSim

    def start(self) -> SambaBoard:
        if not self._thread.is_alive() and not self._stop:
            self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self.to_target.close()
        self.to_host.close()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(1.0)

    def reset(self) -> None:
        """DTR/RTS edges and opening the port do nothing: neither the native USB port
        nor these UARTs are wired to NRST."""

    @property
    def resets_on_open(self) -> bool:
        return False

    def press_reset(self) -> None:
        """The reset button."""
        self._request_reset("reset button")

    def set_host_baud(self, baud: int) -> None:
        if self.link == "uart":
            with self.to_target.cond:
                self.to_target.tx_baud = baud
            with self.to_host.cond:
                self.to_host.rx_baud = baud

    def _request_reset(self, why: str) -> None:
        with self._cond:
            self._reset_request = why
            self._cond.notify_all()
        self.to_target.wake()

    def _software_reset(self, why: str) -> None:
        # Called from the firmware thread itself (a store to AIRCR or RSTC_CR).
        raise _Reset(why)

    # ------------------------------------------------------------------ the chip

    def _firmware(self) -> None:
        why = "power-on"
        while True:
            try:
                self._boot(why)
                if self.state == "monitor":
                    assert self.monitor is not None
                    try:
                        self.monitor.run()
                    except Crashed:
                        self._set_state("crashed")
                self._idle()
            except _Reset as reset:
                why = reset.why
            except _Stop:
                return

    def _set_state(self, state: str) -> None:
        with self._cond:
            self.state = state
            self._cond.notify_all()
        self.ctx.log(f"state {state}")

    def _boot(self, why: str) -> None:
        self.resets.append(why)
        self.ctx.log(f"reset: {why}")
        self._set_state("reset")
        # The link drops: nothing queued for the host goes out, and what the host sent
        # meanwhile is lost.
        self.to_host.cancel_from(time.monotonic())
        self.to_target.drop_arrived()
        with self._cond:
            self._reset_request = None
        if self.chip.nvm is not None:
            self.chip.nvm.reset()
        if self._starts_application(why):
            sp, pc = words_at(self.chip, self.chip.app_start)
            self.booted.append((sp, pc))
            self.ctx.log(f"application started: SP 0x{sp:08X}, reset handler 0x{pc:08X}")
            self._set_state("application")
            return
        self.monitor = Monitor(
            self.chip,
            _Port(self),
            self.variant,
            packet_bug=self.faults.packet,
            security=self.security,
            faults=self.faults.hit,
            log=self.ctx.log,
        )
        self._set_state("monitor")

    def _starts_application(self, why: str) -> bool:
        chip = self.chip
        spec = chip.spec
        if spec.monitor == "rom":
            assert chip.gpnvm is not None
            return bool(chip.gpnvm.value & 2)
        power_on = why == "power-on"
        sp, pc = words_at(chip, chip.app_start)
        if spec.monitor == "zero":
            if sp == 0xFFFFFFFF:
                return False
            tap_at, magic = ZERO_DOUBLE_TAP
            quick = False
        else:
            if pc < chip.app_start or pc > spec.flash_size:
                return False
            tap_at = chip.spec.sram[0][0] + chip.spec.sram[0][1] - 4
            magic = UF2_DOUBLE_TAP
        bus = chip.bus
        if power_on:
            bus.write(tap_at, 4, 0)
            return True
        value = bus.read(tap_at, 4)
        if value == magic:
            bus.write(tap_at, 4, 0)
            self.ctx.log("double tap: staying in the bootloader")
            return False
        quick = spec.monitor == "uf2" and value == UF2_QUICK_BOOT
        if not quick:
            bus.write(tap_at, 4, magic)
            self._sleep(DOUBLE_TAP_WAIT)  # a reset meanwhile is the second tap
        bus.write(tap_at, 4, 0)
        return True

    def _sleep(self, seconds: float) -> None:
        self._wait(time.monotonic() + seconds * self.throttle)

    def _wait(self, until: float) -> None:
        with self._cond:
            while True:
                self._check()
                left = until - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(left)

    def _check(self) -> None:
        """Raise for a pending reset or stop. Caller holds ``_cond``."""
        if self._stop:
            raise _Stop
        if self._reset_request is not None:
            raise _Reset(self._reset_request)
        nvm = self.chip.nvm
        if nvm is not None and getattr(nvm, "reset_request", False):
            nvm.reset_request = False  # type: ignore[attr-defined]
            raise _Reset("NVMCTRL SWRST")

    def _idle(self) -> None:
        """The application (or a crashed monitor): the port hears nothing."""
        while True:
            with self._cond:
                self._check()
                self._cond.wait(0.05)
            self.to_target.drop_arrived()

    # ------------------------------------------------------------------ the link

    def _receive(self, size: int, timeout: float | None) -> bytes:
        """Up to ``size`` bytes from the host, waiting ``timeout`` (None: for ever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._cond:
                self._check()
            wait = 0.05 if deadline is None else max(0.0, min(0.05, deadline - time.monotonic()))
            data = self.to_target.read(1, wait)
            if data:
                data += self.to_target.read(size - 1, 0) if size > 1 else b""
                return self._rx_faults(data)
            if self.to_target.closed:
                with self._cond:
                    self._stop = True
                raise _Stop
            if deadline is not None and time.monotonic() >= deadline:
                return b""

    def _rx_faults(self, data: bytes) -> bytes:
        out = bytearray()
        for value in data:
            self._rx_count += 1
            if self._rx_count in self.faults.counted["rxdrop"]:
                self.ctx.log(f"host byte {self._rx_count} lost (fault)")
                continue
            if self._rx_count in self.faults.counted["rxcorrupt"]:
                value ^= 0xFF
            out.append(value)
        return bytes(out)

    def _send(self, data: bytes) -> None:
        if self.faults.line.dead:
            return
        out = bytearray()
        for value in data:
            self._tx_count += 1
            got = self.faults.line.tx_byte(self._tx_count, value)
            if got is not None:
                out.append(got)
        if out:
            self.to_host.send(bytes(out))

    # ------------------------------------------------------------------ inspection

    @property
    def usb_id(self) -> str | None:
        """VID:PID a USB host sees now: the monitor's while it runs (crashed or not),
        None on a UART, in reset or while the (silent) application runs."""
        if self.link != "usb" or self.state not in ("monitor", "crashed"):
            return None
        return self._usb_id

    @property
    def flash(self) -> bytes:
        """The whole flash, from the flash base (0x80000 SAM3X, 0x400000 SAM4E, 0 SAMD)."""
        return bytes(self.chip.flash)

    @property
    def eeprom(self) -> bytes:
        return b""

    @property
    def user_row(self) -> bytes:
        return bytes(self.chip.user)

    @property
    def gpnvm(self) -> int | None:
        return None if self.chip.gpnvm is None else self.chip.gpnvm.value

    @property
    def monitor_code(self) -> bytes:
        """The SAMD bootloader's bytes at the start of flash (for "untouched" checks)."""
        return bytes(self.chip.flash[: self.chip.spec.monitor_size])

    @property
    def events(self) -> list[Event]:
        return self.ctx.events

    def wait_for_state(self, state: str, timeout: float = 2.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.state != state:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def describe(self) -> str:
        spec = self.chip.spec
        link = "USB-CDC" if self.link == "usb" else f"UART {self.baud} baud"
        what = {"rom": "SAM-BA ROM", "zero": "Arduino Zero bootloader", "uf2": "uf2-samdx1"}
        return f"{spec.name} with {what[spec.monitor]}, {link}, {self.state}"


class _Port:
    """The monitor's view of the link: packets as the firmware reads them."""

    def __init__(self, board: SambaBoard) -> None:
        self.board = board
        self.usb = board.link == "usb"
        self._pending = bytearray()

    def packet(self) -> bytes:
        if self._pending:
            data = bytes(self._pending[:PACKET])
            del self._pending[:PACKET]
            return data
        # USB: one bulk packet is at most 64 bytes; the UART monitors take one byte
        # per call (sam_ba_serial.c serial_getdata).
        data = self.board._receive(PACKET if self.usb else 1, None)
        if self.board.faults.counted["hang"] and b"#" in data:
            for _ in range(data.count(b"#")):
                if self.board.faults.hit("hang"):
                    raise Crashed("hang fault")
        return data

    def get(self, timeout: float | None) -> int | None:
        if self._pending:
            value = self._pending[0]
            del self._pending[0]
            return value
        data = self.board._receive(PACKET, timeout)
        if not data:
            return None
        self._pending += data[1:]
        return data[0]

    def put(self, data: bytes) -> None:
        self.board._send(data)

    def wait_until(self, t: float) -> None:
        self.board._wait(t)
