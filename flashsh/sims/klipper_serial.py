"""Klipper firmware's serial console, byte for byte, for the board simulators.

``KlipperSerialApp`` is what runs on a simulated board before it is rebooted into its
bootloader: it parses message blocks as src/command.c does (sync, length, sequence, CRC,
the nak rules), answers ``identify`` from a small but well-formed data dictionary, and
honours the UART bootloader request of src/generic/serial_irq.c. The same message layer
runs over USB-CDC and CAN, minus that request. The 1200-baud touch of USB-CDC and CAN's
admin request belong to the board simulator, which sees the line settings and frames.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable
from typing import Literal

from flashsh.protocols.klipper_wire import (
    IDENTIFY_FORMAT,
    IDENTIFY_ID,
    IDENTIFY_RESPONSE_FORMAT,
    IDENTIFY_RESPONSE_ID,
    MESSAGE_DEST,
    MESSAGE_MAX,
    MESSAGE_MIN,
    MESSAGE_SEQ_MASK,
    MESSAGE_SYNC,
    SERIAL_BOOTLOADER_REQUEST,
    check_block,
    decode_vlq,
    encode_block,
    encode_identify_response,
    encode_vlq,
)

DEFAULT_VERSION = "v0.12.0-0-g0000000"

#: Ids in declaration order, as scripts/buildcommands.py numbers them: the fixed identify
#: pair, then commands, then responses. Every command here may run while shut down.
COMMAND_IDS: dict[str, int] = {
    IDENTIFY_FORMAT: IDENTIFY_ID,
    "get_uptime": 2,
    "get_clock": 3,
    "get_config": 4,
    "clear_shutdown": 5,
}
RESPONSE_IDS: dict[str, int] = {
    IDENTIFY_RESPONSE_FORMAT: IDENTIFY_RESPONSE_ID,
    "uptime high=%u clock=%u": 6,
    "clock clock=%u": 7,
    "config is_config=%c crc=%u is_shutdown=%c move_count=%hu": 8,
    "shutdown clock=%u static_string_id=%hu": 9,
    "is_shutdown static_string_id=%hu": 10,
}
_SHUTDOWN_ID = RESPONSE_IDS["shutdown clock=%u static_string_id=%hu"]
_CLEAR_SHUTDOWN_ID = COMMAND_IDS["clear_shutdown"]
#: Static strings are numbered from 2 (scripts/buildcommands.py STATIC_STRING_MIN).
STATIC_STRINGS = {"Command parser error": 2, "Invalid command": 3}

# src/command.c command_find_block's sync_state bits.
_NEED_SYNC = 1
_NEED_VALID = 2
Transport = Literal["uart", "usb", "can"]
#: Transmit buffer sizes: src/generic/serial_irq.c, usb_cdc.c, canserial.c.
_TX_BUFFER = {"uart": 96, "usb": 192, "can": 192}
#: Wire rates when none is given: Kconfig SERIAL_BAUD and CANBUS_FREQUENCY defaults.
_DEFAULT_RATE = {"uart": 250000, "usb": 0, "can": 1000000}
#: identify_response's smallest encoding: header, id, one VLQ byte, length, trailer.
_IDENTIFY_RESPONSE_MIN = MESSAGE_MIN + 1 + 2


class _Shutdown(Exception):
    """The firmware's shutdown(): leaves the dispatch loop, as its longjmp does."""


def data_dictionary(
    mcu: str, version: str, *, transport: Transport = "uart", rate: int | None = None
) -> dict[str, object]:
    """The dictionary a build of Klipper for ``mcu`` would carry, cut down to what the
    simulator knows (scripts/buildcommands.py update_data_dictionary)."""
    config: dict[str, object] = {"MCU": mcu}
    rate = rate or _DEFAULT_RATE[transport]
    # Each console declares its own (src/generic/serial_irq.c, canbus.c, canserial.c);
    # USB-CDC declares none.
    if transport == "uart":
        config.update({"SERIAL_BAUD": rate, "RECEIVE_WINDOW": 192})
    elif transport == "can":
        config.update({"CANBUS_FREQUENCY": rate, "RECEIVE_WINDOW": 192})
    return {
        "app": "Klipper",
        "build_versions": "",
        "commands": dict(COMMAND_IDS),
        "config": config,
        "enumerations": {"static_string_id": dict(STATIC_STRINGS)},
        "license": "GNU GPLv3",
        "responses": dict(RESPONSE_IDS),
        "version": version,
    }


def compress_dictionary(data: dict[str, object]) -> bytes:
    """Serialise as the build does: compact JSON, sorted keys, zlib level 9."""
    text = json.dumps(data, separators=(",", ":"), sort_keys=True)
    return zlib.compress(text.encode(), 9)


class KlipperSerialApp:
    """Klipper's command console on a UART (default), USB-CDC or CAN (``transport``);
    ``rate`` is the baud rate or CAN bitrate its dictionary declares.

    Faithful parts: block search and the one-nak-until-a-good-block rule, sequence
    numbers, acks after each dispatched block, ``identify`` slices (a slice that does not
    fit a 64-byte block is dropped silently, as the firmware's encoder does), and a
    shutdown with its ``shutdown`` message on an unknown command id or bad arguments
    (the block is then not acked, and its replay is nakked). Other known commands are
    parsed and ignored: the firmware would answer get_uptime, get_clock and get_config.

    The bootloader request matches only on a UART build, when the block search rejects
    exactly 32 bytes at once (a run that starts like a 32-byte block and whose first sync
    byte is its last, but whose CRC fails) and they equal ``SERIAL_BOOTLOADER_REQUEST``
    after its leading ``~``. The MCU then resets at once: the nak queued for those bytes and
    the rest of the input are lost, and the app restarts fresh unless
    ``on_bootloader_request`` has put another program in its place.
    """

    def __init__(
        self,
        mcu: str,
        on_bootloader_request: Callable[[], None],
        version: str = DEFAULT_VERSION,
        *,
        transport: Transport = "uart",
        rate: int | None = None,
    ) -> None:
        self.mcu = mcu
        self.on_bootloader_request = on_bootloader_request
        self.transport = transport
        self.dictionary = compress_dictionary(
            data_dictionary(mcu, version, transport=transport, rate=rate)
        )
        #: Per command id, which parameters are buffers (the rest are VLQ integers).
        self.params = {msgid: _param_kinds(fmt) for fmt, msgid in COMMAND_IDS.items()}
        self.reset()

    def reset(self) -> None:
        """Power-on state: sequence 0, empty buffers, not shut down."""
        self.rx = bytearray()
        self.next_sequence = MESSAGE_DEST
        self.sync_state = 0
        #: The static string id of the first shutdown's reason; None while running.
        self.shutdown_reason: int | None = None
        #: Bytes queued for transmission during one dispatch (the transmit buffer drains
        #: between blocks here, as it does at any baud rate a host uses).
        self._tx_used = 0

    def feed(self, data: bytes) -> bytes:
        """Take bytes from the host; return the bytes the MCU sends back (maybe none)."""
        self.rx += data
        out = bytearray()
        while True:
            mark = len(out)
            ret, pop = self._find_block(out)
            if ret == 0:
                break
            if ret > 0 and not self._dispatch(bytes(self.rx[:pop]), out):
                continue  # shut down mid-block: the block stays and is found again
            if (
                self.transport == "uart"
                and ret < 0
                and pop == 32
                and self.rx[:32] == SERIAL_BOOTLOADER_REQUEST[1:]
            ):
                del out[mark:]
                self.reset()
                self.on_bootloader_request()
                break
            del self.rx[:pop]
            if ret > 0:
                self._send(out, b"")
        return bytes(out)

    # ------------------------------------------------------------------ blocks

    def _send(self, out: bytearray, content: bytes) -> None:
        out += encode_block(self.next_sequence, content)

    def _find_block(self, out: bytearray) -> tuple[int, int]:
        """(1, length) for the next good block, (-1, bytes to drop) for anything else,
        (0, 0) when more bytes are needed; naks as src/command.c command_find_block."""
        if self.rx and self.sync_state & _NEED_SYNC:
            return self._resync(out)
        status = check_block(self.rx)
        if status == 0:
            return 0, 0
        if status < 0:
            if self.rx[0] == MESSAGE_SYNC:
                return -1, 1  # a leading sync byte is dropped without a nak
            self.sync_state |= _NEED_SYNC
            return self._resync(out)
        self.sync_state &= ~_NEED_VALID
        seq = self.rx[1]
        if seq != self.next_sequence:
            self._send(out, b"")  # lost block: nak until it is sent again
            return -1, status
        self.next_sequence = ((seq + 1) & MESSAGE_SEQ_MASK) | MESSAGE_DEST
        return 1, status

    def _resync(self, out: bytearray) -> tuple[int, int]:
        sync = self.rx.find(MESSAGE_SYNC)
        if sync >= 0:
            self.sync_state &= ~_NEED_SYNC
        pop = sync + 1 if sync >= 0 else len(self.rx)
        # One nak per run of bad bytes: none again until a good block arrives.
        if not self.sync_state & _NEED_VALID:
            self.sync_state |= _NEED_VALID
            self._send(out, b"")
        return -1, pop

    # ------------------------------------------------------------------ commands

    def _dispatch(self, block: bytes, out: bytearray) -> bool:
        """Run each command of ``block``; False if one shut the firmware down."""
        pos, end = 2, len(block) - 3
        self._tx_used = 0
        try:
            while pos < end:
                msgid = block[pos]
                pos += 1
                if msgid & 0x80:
                    msgid = ((msgid & 0x7F) << 7) | block[pos]
                    pos += 1
                if msgid not in self.params:
                    raise _Shutdown("Invalid command")
                args, pos = _parse_args(block, pos, end, self.params[msgid])
                if msgid == IDENTIFY_ID:
                    self._identify(args[0], args[1] & 0xFF, out)
                elif msgid == _CLEAR_SHUTDOWN_ID:
                    self.shutdown_reason = None
        except _Shutdown as exc:
            # src/sched.c run_shutdown: the first reason sticks, the report goes every time
            # (clock 0: the simulator keeps no timer).
            if self.shutdown_reason is None:
                self.shutdown_reason = STATIC_STRINGS[str(exc)]
            reply = encode_vlq(_SHUTDOWN_ID) + encode_vlq(0) + encode_vlq(self.shutdown_reason)
            self._send(out, reply)
            return False
        return True

    def _identify(self, offset: int, count: int, out: bytearray) -> None:
        # src/basecmd.c command_identify: clip the slice to the dictionary.
        size = len(self.dictionary)
        count = 0 if offset >= size else min(count, size - offset)
        content = encode_identify_response(offset, self.dictionary[offset : offset + count])
        # src/command.c command_encodef and console_sendf: a reply that does not fit the
        # block or the transmit buffer is dropped without a word.
        room = _TX_BUFFER[self.transport] - self._tx_used
        block_len = MESSAGE_MIN + len(content) + (0 if count else 1)
        if room < _IDENTIFY_RESPONSE_MIN or block_len > min(MESSAGE_MAX, room):
            return
        self._send(out, content)
        self._tx_used += MESSAGE_MIN + len(content)


def _param_kinds(fmt: str) -> list[bool]:
    """For each parameter of a format: True for a buffer, False for a VLQ integer."""
    return [kind.endswith("s") for kind in re.findall(r"=(%\S+)", fmt)]


def _parse_args(block: bytes, pos: int, end: int, kinds: list[bool]) -> tuple[list[int], int]:
    """src/command.c command_parsef: VLQ integers and (length, data) buffers. Like the
    firmware, an integer may run into the CRC; starting past the content is an error."""
    args: list[int] = []
    try:
        for is_buffer in kinds:
            if pos > end:
                raise _Shutdown("Command parser error")
            if is_buffer:
                size = block[pos]
                pos += 1
                if pos + size > end:
                    raise _Shutdown("Command parser error")
                args.append(size)
                pos += size
            else:
                value, pos = decode_vlq(block, pos, signed=False)
                args.append(value)
    except IndexError:
        raise _Shutdown("Command parser error") from None
    return args, pos
