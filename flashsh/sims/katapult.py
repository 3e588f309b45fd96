"""A board with Katapult on a serial link: ``sim://katapult`` (sitting in Katapult) and
``sim://klipper`` (running Klipper, Katapult installed underneath).

The link is USB-CDC (``link=usb``, the default: the host's baud rate means nothing, bytes
move at one 64-byte bulk packet per 1 ms USB frame) or a UART (``link=uart``, ``baud``
default 250000, 8N1, timed and garbled on a mismatch by :class:`flashsh.sims.wire.Wire`).
Katapult's frames travel unchanged; there is no CAN admin layer and GET_CANBUS_ID gets
0xF2 (katapult.md 3.1).

Klipper's bytes go to :class:`flashsh.sims.klipper_serial.KlipperSerialApp`. It asks for
the bootloader after the 33-byte serial request string, which only the UART build checks
(Klipper3d/klipper src/generic/serial_irq.c); over USB the request is the 1200-baud touch:
line coding 1200 while DTR is low (src/generic/usb_cdc.c ``check_reboot``). Either way
the board resets into Katapult.

``usb_id`` is the VID:PID a USB host would see now: ``1d50:6177`` in Katapult,
``1d50:614e`` in Klipper, None on a UART or while nothing enumerates; a reboot into the
other firmware switches it, as re-enumeration does on a real port.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from flashsh.sims.board import number_option
from flashsh.sims.can_bus import NODE_OPTIONS, node_config
from flashsh.sims.katapult_faults import NodeFaults
from flashsh.sims.katapult_node import REQUEST_CANBOOT, TX_BUFFER, KatapultNode
from flashsh.sims.scheduler import Scheduler
from flashsh.sims.wire import Wire

KATAPULT_USB_ID = "1d50:6177"
KLIPPER_USB_ID = "1d50:614e"
UART_BAUD = 250_000  # CONFIG_SERIAL_BAUD default (katapult src/Kconfig)
#: USB full speed: one 64-byte bulk packet per 1 ms frame, as a 10-bit-per-byte line.
USB_PACE_BAUD = 640_000
MESSAGE_SYNC = 0x03

OPTIONS = {
    "link": "usb (default) or uart",
    "baud": "uart: the firmware's rate (default 250000); usb: ignored",
    "throttle": "1 = real time (default), 0 = no delays",
    **{k: v for k, v in NODE_OPTIONS.items() if k != "fault"},
    "fault": "respdrop:N respdup:N crc:N nack:N busy:N reboot:N silent (repeatable)",
}

KlipperFactory = Callable[[str, Callable[[], None]], Any]


def _klipper_serial_app(mcu: str, request: Callable[[], None]) -> Any:
    from flashsh.sims.klipper_serial import KlipperSerialApp

    return KlipperSerialApp(mcu, request)


class KatapultBoard:
    """The board on its serial link; also the NodeHost of its Katapult."""

    protocol = "katapult"
    OPTIONS = OPTIONS
    kind = "katapult"

    def __init__(
        self,
        options: dict[str, list[str]] | None = None,
        *,
        host_baud: int | None = None,
        klipper: KlipperFactory | None = None,
    ) -> None:
        options = options or {}
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ValueError(
                f"unknown option {unknown[0]!r} for sim://{self.protocol}; "
                f"valid: {', '.join(OPTIONS)}"
            )
        one = {name: values[-1] for name, values in options.items()}
        self.link = one.get("link", "usb").lower()
        if self.link not in ("usb", "uart"):
            raise ValueError(f"option link={self.link!r}: usb or uart")
        throttle = number_option("throttle", one.get("throttle", "1"))
        self.baud = int(number_option("baud", one.get("baud", str(UART_BAUD))))
        if self.baud <= 0:
            raise ValueError("option baud must be positive")
        config = node_config(one, throttle, installed=self.kind == "klipper")
        faults = NodeFaults.parse(options.get("fault", []), can=False)
        if self.link == "usb":
            line = USB_PACE_BAUD
            self.to_target = Wire(line, line, throttle=throttle)
            self.to_host = Wire(line, line, throttle=throttle)
        else:
            host = host_baud or self.baud
            self.to_target = Wire(host, self.baud, throttle=throttle)
            self.to_host = Wire(self.baud, host, throttle=throttle)
        self.clock = Scheduler(name=f"sim-{self.protocol}")
        self._klipper_factory = klipper or _klipper_serial_app
        self._klipper: Any = None
        self._host_baud = host_baud or self.baud
        self._dtr = False
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, name="sim-katapult-rx", daemon=True)
        self.node = KatapultNode(config, self, link=self.link, faults=faults)
        if self.kind == "katapult":
            self.node.reset(REQUEST_CANBOOT, why="power-on (in Katapult)")
        else:
            self.node.power_on()

    @classmethod
    def from_options(cls, options: dict[str, list[str]], host_baud: int | None) -> KatapultBoard:
        return cls(options, host_baud=host_baud)

    # ------------------------------------------------------------------ SerialSim

    def start(self) -> KatapultBoard:
        if not self._reader.is_alive() and not self._stop.is_set():
            self.clock.start()
            self._reader.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.to_target.close()
        self.to_host.close()
        if self._reader.is_alive():
            self._reader.join(1.0)
        self.clock.stop()

    def reset(self) -> None:
        """DTR/RTS edges and opening the port do nothing: neither a USB-CDC nor a UART
        Katapult board wires them to NRST."""

    @property
    def resets_on_open(self) -> bool:
        return False

    def press_reset(self) -> None:
        """The reset button (no boot code in RAM: the boot rule and double-reset wait)."""
        self.clock.call(lambda: self.node.reset(why="reset button"))

    def set_host_baud(self, baud: int) -> None:
        self._host_baud = baud
        if self.link == "uart":
            with self.to_target.cond:
                self.to_target.tx_baud = baud
            with self.to_host.cond:
                self.to_host.rx_baud = baud
        self.clock.call(self._check_touch)

    def set_host_lines(self, dtr: bool, rts: bool) -> None:
        """SET_CONTROL_LINE_STATE on USB: Klipper looks at DTR with the line coding."""
        self._dtr = dtr
        self.clock.call(self._check_touch)

    def _check_touch(self) -> None:
        if (
            self.link == "usb"
            and self._klipper is not None
            and self._host_baud == 1200
            and not self._dtr
        ):
            self.node.request_bootloader("1200-baud touch")

    # ------------------------------------------------------------------ NodeHost

    def after(self, delay: float, fn: Callable[[], None]) -> None:
        self.clock.after(delay, fn)

    def now(self) -> float:
        return self.clock.now()

    def send(self, data: bytes) -> None:
        if not self.node.faults.has("silent"):
            self.to_host.send(data)

    def tx_room(self) -> int:
        now = self.clock.now()
        waiting = sum(1 for byte in self.to_host if byte.start > now)
        return TX_BUFFER[self.link] - waiting

    def on_reset(self) -> None:
        # The reset stops the transmitter mid-stream; on USB the device disconnects.
        self.to_host.cancel_from(self.clock.now())
        self._klipper = None

    def on_state(self, state: str) -> None:
        if state == "application" and self.node.config.app == "klipper":
            try:
                self._klipper = self._klipper_factory(self.node.config.mcu, self._app_request)
            except ImportError:
                self.node.log("no Klipper model available: the application says nothing")

    def _app_request(self) -> None:
        if self.link == "usb":
            # Klipper's USB build never checks the serial request string.
            self.node.log("serial bootloader request ignored on USB-CDC")
            return
        self.clock.call(lambda: self.node.request_bootloader("serial request string"))

    # ------------------------------------------------------------------ receiving

    def _read(self) -> None:
        while not self._stop.is_set():
            limit = 4096
            if self.link == "usb" and self.node.state == "bootloader":
                # USB stops taking packets while the buffer is full; nothing is lost.
                limit = self.node.room()
                if limit <= 0:
                    self._stop.wait(0.001)
                    continue
            data = self.to_target.read(1, 0.05)
            if not data:
                continue
            data += self.to_target.read(max(limit - 1, 0), 0)
            self.clock.call(lambda d=data: self._arrived(d))

    def _arrived(self, data: bytes) -> None:
        state = self.node.state
        if state == "bootloader":
            if self.link == "uart":
                # Bytes beyond the 192-byte buffer are lost (serial_irq.c), and the main
                # loop only wakes on a 0x03 (MESSAGE_SYNC).
                self.node.receive(data[: self.node.room()])
                if MESSAGE_SYNC in data:
                    self.node.kick()
            else:
                self.node.receive(data)
                self.node.kick()
        elif state == "application" and self._klipper is not None:
            reply = self._klipper.feed(data)
            if reply and not self.node.faults.has("silent"):
                self.to_host.send(reply)

    # ------------------------------------------------------------------ inspection

    @property
    def state(self) -> str:
        return self.node.state

    @property
    def usb_id(self) -> str | None:
        if self.link != "usb":
            return None
        if self.node.state == "bootloader":
            return KATAPULT_USB_ID
        if self.node.state == "application" and self._klipper is not None:
            return KLIPPER_USB_ID
        return None

    @property
    def flash(self) -> bytes:
        return self.node.flash

    @property
    def eeprom(self) -> bytes:
        return b""

    @property
    def events(self) -> list:
        return self.node.events

    def describe(self) -> str:
        config = self.node.config
        link = "USB-CDC" if self.link == "usb" else f"UART {self.baud} baud"
        return (
            f"{config.mcu} with Katapult {config.version} (protocol {config.protocol}), "
            f"app start 0x{self.node.app_start:08X}, {link}, {self.node.state}"
        )


class KlipperBoard(KatapultBoard):
    """The same board running Klipper, Katapult installed underneath."""

    protocol = "klipper"
    kind = "klipper"
