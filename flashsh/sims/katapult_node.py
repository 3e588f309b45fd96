"""A board with Katapult installed: the bootloader's command handling, its flash, and the
boot rule that picks Katapult or the application after every reset.

The transport (CAN, UART, USB-CDC) is the caller's business: it feeds received bytes in
with :meth:`KatapultNode.receive` and gets responses through its :class:`NodeHost`.
Everything runs on the host's clock thread (:mod:`flashsh.sims.scheduler`).

Facts: katapult src/command.c (parser, responses), src/flashcmd.c (commands),
src/stm32/flash.c (writes, in :mod:`flashsh.sims.katapult_flash`),
src/generic/armcm_canboot.c and src/bootentry.c (boot rule).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from flashsh.protocols import katapult_frame as kf
from flashsh.sims.katapult_faults import NodeFaults
from flashsh.sims.katapult_flash import BLOCK_SIZE, KatapultFlash, mcu_by_name
from flashsh.sims.mcu import Event

# Boot-code slot values (katapult src/canboot.h).
REQUEST_CANBOOT = 0x5984E3FA6CA1589B
REQUEST_START_APP = 0x7B06EC45A9A8243D

PROTOCOLS = {"1.1.0": 0x00010100, "1.0.0": 0x00010000}
#: command_complete: the jump comes 100 ms after the ACK (a timer, not scaled).
COMPLETE_DELAY = 0.100
#: bootentry.c check_double_reset: 10 ms + 490 ms before a valid application starts.
DOUBLE_RESET_MS = 500.0
#: Transmit buffers (katapult src/generic/canserial.c, serial_irq.c, usb_cdc.c).
TX_BUFFER = {"can": 96, "uart": 96, "usb": 192}
#: Receive buffers, same files. CAN drops a frame that does not fit, the UART drops
#: bytes; USB stops taking packets (the host waits), so nothing is lost there.
RX_BUFFER = {"can": 192, "uart": 192, "usb": 128}


class NodeHost(Protocol):
    """What the node needs from its transport."""

    def after(self, delay: float, fn: Callable[[], None]) -> None: ...
    def now(self) -> float: ...
    def send(self, data: bytes) -> None: ...
    def tx_room(self) -> int: ...
    def on_reset(self) -> None: ...
    def on_state(self, state: str) -> None: ...


@dataclass(frozen=True)
class NodeConfig:
    """How the board was built and what it holds."""

    mcu: str = "stm32f103xe"
    app_start: int | None = None
    flash_kib: int | None = None
    version: str = "v0.0.1"
    protocol: str = "1.1.0"
    #: Model the parser that never discards a failing buffer starting with 0x01.
    stall: bool = False
    #: What runs when the application runs: "klipper" or "silent".
    app: str = "klipper"
    #: Installed application (file, placed at app start unless it carries addresses).
    image: str | None = None
    #: Start with a valid application (a Klipper node) even without ``image``.
    installed: bool = False
    throttle: float = 1.0
    double_reset_ms: float = DOUBLE_RESET_MS

    def validate(self) -> None:
        mcu_by_name(self.mcu)
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol {self.protocol!r}; valid: {', '.join(PROTOCOLS)}")
        if self.app not in ("klipper", "silent"):
            raise ValueError(f"app {self.app!r}; valid: klipper, silent")
        if self.throttle < 0 or self.double_reset_ms < 0:
            raise ValueError("throttle and double_reset_ms must not be negative")
        if self.app_start is not None and self.app_start % BLOCK_SIZE:
            raise ValueError(f"app_start 0x{self.app_start:08X} is not block-aligned")


class CommandParser:
    """``command_find_block`` (katapult src/command.c), state included."""

    def __init__(self, stall: bool) -> None:
        self.stall = stall
        self.need_sync = False
        self.need_valid = False

    def reset(self) -> None:
        self.need_sync = self.need_valid = False

    def find(self, buf: bytearray) -> tuple[int, int, bool]:
        """Return (ret, pop_count, send_nack): ret 1 = a good frame of pop_count bytes
        at the start, 0 = need more bytes, -1 = pop_count bytes to discard."""
        if buf and self.need_sync:
            return self._resync(buf, 0)
        if len(buf) < kf.FRAME_MIN:
            return 0, 0, False
        if buf[:2] != kf.HEADER:
            return self._error(buf)
        length = buf[3] * 4 + 8
        if length > kf.FRAME_MAX:
            return self._error(buf)
        if len(buf) < length:
            return 0, 0, False
        if buf[length - 2 : length] != kf.TRAILER:
            return self._error(buf)
        crc = buf[length - 4] | buf[length - 3] << 8
        if kf.crc16(bytes(buf[2 : length - 4])) != crc:
            return self._error(buf)
        self.need_valid = False
        return 1, length, False

    def _error(self, buf: bytearray) -> tuple[int, int, bool]:
        self.need_sync = True
        # The firmware searches from the first byte, so a failing buffer that starts with
        # 0x01 pops nothing and fails again for ever (katapult.md 2.10). Klipper's parser,
        # which it derives from, discards through the sync byte; that is the default here.
        return self._resync(buf, 0 if self.stall else 1)

    def _resync(self, buf: bytearray, start: int) -> tuple[int, int, bool]:
        found = buf.find(kf.HEADER[0], start)
        if found >= 0:
            self.need_sync = False
            pop = found
        else:
            pop = len(buf)
        if self.need_valid:
            return -1, pop, False
        self.need_valid = True
        return -1, pop, True


def respond(kind: int, words: bytes = b"") -> bytes:
    """A response frame as ``command_respond`` builds it."""
    return kf.build(kind, words)


def ack(command: int, data: bytes = b"") -> bytes:
    return respond(kf.ACK, struct.pack("<I", command) + data)


class KatapultNode:
    """One board: Katapult below, maybe an application above, one flash."""

    def __init__(
        self,
        config: NodeConfig,
        host: NodeHost,
        *,
        link: str = "can",
        faults: NodeFaults | None = None,
        uuid: bytes | None = None,
    ) -> None:
        config.validate()
        self.config = config
        self.host = host
        self.link = link
        self.faults = faults or NodeFaults()
        #: CAN builds answer GET_CANBUS_ID with this; None on serial builds.
        self.uuid = uuid
        mcu = mcu_by_name(config.mcu)
        app_start = config.app_start if config.app_start is not None else mcu.app_start
        size = config.flash_kib * 1024 if config.flash_kib else None
        self.memory = KatapultFlash(mcu, app_start, size)
        if config.image:
            self._load_image(config.image)
        elif config.installed:
            # A stand-in application: a plausible initial stack pointer and reset vector.
            self.memory.load(app_start, struct.pack("<II", 0x20005000, app_start + 0x101))
        self.parser = CommandParser(config.stall)
        self.rx = bytearray()
        self.rx_limit = RX_BUFFER[link]
        #: "reset", "bootloader", "application" or "lockup" (jumped to a blank app).
        self.state = "reset"
        self.events: list[Event] = []
        self.t0 = host.now()
        self.epoch = 0
        self.commands = 0
        self.responses = 0
        self.blocks = 0
        self.resets = 0
        self._cpu_free = 0.0
        self._kicked = False

    # ------------------------------------------------------------------ inspection

    @property
    def flash(self) -> bytes:
        """The whole flash from 0x08000000."""
        return bytes(self.memory.data)

    @property
    def app_start(self) -> int:
        return self.memory.app_start

    def log(self, what: str) -> None:
        self.events.append(Event(round(self.host.now() - self.t0, 6), what))

    def logged(self, text: str) -> bool:
        """Whether any event contains ``text`` (for tests)."""
        return any(text in event.what for event in self.events)

    def _load_image(self, path: str) -> None:
        from flashsh.errors import FlashshError
        from flashsh.images.load import load_image

        try:
            image = load_image(path, default_address=self.memory.app_start)
        except FlashshError as exc:
            raise ValueError(str(exc)) from None
        for segment in image.segments:
            self.memory.load(segment.address, segment.data)

    # ------------------------------------------------------------------ boot

    def power_on(self) -> None:
        """The board was running before the simulation began: no double-reset wait."""
        self._boot(None, wait=False, why="power-on")

    def reset(self, code: int | None = None, why: str = "reset") -> None:
        """A system reset with ``code`` in the boot-code slot (it survives in RAM)."""
        self._boot(code, wait=True, why=why)

    def request_bootloader(self, how: str) -> None:
        """The application asks for Katapult (Klipper's ``bootloader_request``: writes
        the request signature and resets; Klipper3d/klipper src/generic/armcm_reset.c)."""
        self.log(f"bootloader request ({how})")
        self.reset(REQUEST_CANBOOT, why="bootloader request")

    def _boot(self, code: int | None, *, wait: bool, why: str) -> None:
        self.epoch += 1
        self.resets += 1
        self.rx.clear()
        self.parser.reset()
        self.memory.reboot()
        self._cpu_free = self.host.now()
        self._set_state("reset")
        self.host.on_reset()
        self.log(why)
        if code == REQUEST_START_APP:
            # reset_handler_stage_two jumps without looking at the application.
            self._start_app()
        elif code == REQUEST_CANBOOT or not self.memory.app_valid():
            self._set_state("bootloader")
        elif wait and self.config.double_reset_ms:
            epoch = self.epoch
            delay = self.config.double_reset_ms / 1000

            def later() -> None:
                if self.epoch == epoch:
                    self._start_app()

            self.host.after(delay, later)
        else:
            self._start_app()

    def _start_app(self) -> None:
        if not self.memory.app_valid():
            # MSP and PC from blank flash: a fault inside the fault handler locks the
            # core up until the next reset (Cortex-M lockup; UNCONFIRMED on hardware).
            self.log("application jump into blank flash: core locked up")
            self._set_state("lockup")
            return
        self.log(f"application started ({self.config.app})")
        self._set_state("application")

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.host.on_state(state)

    # ------------------------------------------------------------------ receiving

    def room(self) -> int:
        return self.rx_limit - len(self.rx)

    def receive(self, data: bytes) -> bool:
        """Bytes from the transport while Katapult runs; False if they did not fit the
        receive buffer (the caller decides whether that loses a frame or bytes)."""
        if self.state != "bootloader":
            return False
        if len(data) > self.room():
            return False
        self.rx += data
        return True

    def kick(self) -> None:
        """New bytes are in: let the main loop look at them once the CPU is free."""
        if self._kicked or self.state != "bootloader":
            return
        self._kicked = True
        epoch = self.epoch
        wait = max(self._cpu_free - self.host.now(), 0.0)

        def run() -> None:
            self._kicked = False
            if self.epoch == epoch:
                self._parse()

        self.host.after(wait, run)

    def _parse(self) -> None:
        epoch = self.epoch
        idle = False
        while self.state == "bootloader" and self.epoch == epoch:
            if self._cpu_free > self.host.now():
                self.kick()
                return
            ret, pop, nack = self.parser.find(self.rx)
            if nack:
                self.log("parser: bad frame, NACK")
                self._respond(respond(kf.NACK))
            if ret == 0:
                return
            frame = bytes(self.rx[:pop])
            del self.rx[:pop]
            if ret < 0:
                # Popping nothing twice running: the same bytes fail on every pass (the
                # stall of katapult.md 2.10); the firmware spins, the model waits for data.
                if pop == 0 and idle:
                    return
                idle = pop == 0
                continue
            idle = False
            self._dispatch(frame)

    # ------------------------------------------------------------------ commands

    def _dispatch(self, frame: bytes) -> None:
        self.commands += 1
        n = self.commands
        command, words = frame[2], frame[3]
        payload = frame[4:-4]
        name = kf.NAMES.get(command, f"0x{command:02x}")
        if self.faults.hit("nack", n) or self.faults.hit("busy", n):
            kind = kf.NACK if self.faults.hit("nack", n) else kf.BUSY
            self.log(f"command {n} ({name}) answered {kf.NAMES[kind]} (fault)")
            self._respond(respond(kind))
            return
        if command == kf.CONNECT:
            self._respond(self._connect())
        elif command == kf.SEND_BLOCK:
            self._send_block(words, payload)
        elif command == kf.SEND_EOF:
            # flash_complete: the page count (katapult src/stm32/flash.c).
            self._respond(ack(command, struct.pack("<I", self.memory.page_writes)))
        elif command == kf.REQUEST_BLOCK:
            # No range check (katapult src/flashcmd.c command_read_block); a frame
            # without the address word reads whatever the stack held: 0 here.
            address = struct.unpack_from("<I", payload)[0] if len(payload) >= 4 else 0
            data = self.memory.read(address, BLOCK_SIZE)
            self._respond(ack(command, struct.pack("<I", address) + data))
        elif command == kf.COMPLETE:
            self._complete()
        elif command == kf.GET_CANBUS_ID and self.uuid is not None:
            uuid = self.uuid
            if self.faults.has("baduuid"):
                uuid = uuid[:5] + bytes([uuid[5] ^ 0xFF])
            self._respond(ack(command, uuid + b"\x00\x00"))
        else:
            # Unknown command, or GET_CANBUS_ID on a build without CAN (command.c).
            self.log(f"command {name}: COMMAND_ERROR")
            self._respond(respond(kf.COMMAND_ERROR))

    def _connect(self) -> bytes:
        mcu = self.config.mcu.encode()
        words = struct.pack(
            "<III", PROTOCOLS[self.config.protocol], self.memory.app_start, BLOCK_SIZE
        )
        words += mcu + bytes(-len(mcu) % 4)
        if self.config.protocol != "1.0.0":
            # One zero separator word, then the version (flashcmd.c command_connect).
            version = self.config.version.encode()
            words += bytes(4) + version + bytes(-len(version) % 4)
        return ack(kf.CONNECT, words)

    def _send_block(self, words: int, payload: bytes) -> None:
        self.blocks += 1
        if words != BLOCK_SIZE // 4 + 1:
            self.log(f"SEND_BLOCK with {words} words: COMMAND_ERROR")
            self._respond(respond(kf.COMMAND_ERROR))
            return
        address = struct.unpack_from("<I", payload)[0]
        if address < self.memory.app_start:
            self.log(f"SEND_BLOCK 0x{address:08X} below app start: COMMAND_ERROR")
            self._respond(respond(kf.COMMAND_ERROR))
            return
        result = self.memory.write_block(address, payload[4 : 4 + BLOCK_SIZE])
        if result.why:
            self.log(f"SEND_BLOCK 0x{address:08X}: {result.why}")
        reply = (
            ack(kf.SEND_BLOCK, struct.pack("<I", address))
            if result.ok
            else respond(kf.COMMAND_ERROR)
        )
        busy = result.seconds * self.config.throttle
        if self.faults.hit("reboot", self.blocks):
            self.log(f"SEND_BLOCK {self.blocks}: reset before the reply (fault)")
            self._after_busy(busy, lambda: self.reset(why="reset (fault)"))
            return
        self._after_busy(busy, lambda: self._respond(reply))

    def _after_busy(self, busy: float, fn: Callable[[], None]) -> None:
        """The CPU programs flash for ``busy`` seconds, then runs ``fn``."""
        if busy <= 0:
            fn()
            return
        now = self.host.now()
        self._cpu_free = now + busy
        epoch = self.epoch

        def done() -> None:
            if self.epoch == epoch:
                fn()
                self.kick()

        self.host.after(busy, done)

    def _complete(self) -> None:
        self._respond(ack(kf.COMPLETE))
        epoch = self.epoch

        def jump() -> None:
            if self.epoch == epoch:
                self.reset(REQUEST_START_APP, why="COMPLETE: reset into the application")

        self.host.after(COMPLETE_DELAY, jump)

    # ------------------------------------------------------------------ sending

    def _respond(self, frame: bytes) -> None:
        self.responses += 1
        n = self.responses
        if len(frame) > self.host.tx_room():
            # console_sendf drops a message that does not fit the transmit buffer.
            self.log(f"response {n} ({len(frame)} bytes) does not fit: dropped")
            return
        if self.faults.hit("crc", n):
            self.log(f"response {n}: CRC corrupted (fault)")
            frame = frame[:-4] + bytes([frame[-4] ^ 0xFF, frame[-3] ^ 0xFF]) + frame[-2:]
        copies = 2 if self.faults.hit("respdup", n) else 1
        if copies == 2:
            self.log(f"response {n}: sent twice (fault)")
        if self.faults.hit("respdrop", n):
            self.log(f"response {n}: last piece lost (fault)")
            frame = frame[: (len(frame) - 1) // 8 * 8]
        for _ in range(copies):
            self.host.send(frame)
