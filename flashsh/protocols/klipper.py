"""Klipper firmware seen from the host: recognise it and ask it for its bootloader.

flashsh does not flash through Klipper. It only needs to say "Klipper firmware is
running" and to reboot it into Katapult (or the platform's bootloader): the 33-byte
request on a UART, the 1200-baud touch on USB-CDC. Facts: docs/protocols/README.md,
Klipper3d/klipper docs/Protocol.md and src/generic/serial_irq.c / usb_cdc.c.
"""

from __future__ import annotations

import json
import re
import time
import zlib
from dataclasses import dataclass

from flashsh.errors import TransportError
from flashsh.protocols.klipper_wire import (
    SERIAL_BOOTLOADER_REQUEST,
    Block,
    BlockReader,
    decode_vlq,
    encode_block,
    encode_identify,
    encode_vlq,
    parse_identify_response,
)
from flashsh.transports.base import ByteLink

__all__ = [
    "KlipperIdentity",
    "decode_vlq",
    "encode_block",
    "encode_vlq",
    "probe_klipper",
    "request_serial_bootloader",
    "touch_1200",
]

#: Bytes asked for per identify, as klippy asks (klippy/serialhdl.py _get_identify_data):
#: every Klipper version answers 40 in one block, on any transport.
CHUNK = 40
#: Stop reading a dictionary that grows past these: real ones are a few KiB compressed
#: and some tens of KiB of JSON.
DICTIONARY_MAX = 64 * 1024
TEXT_MAX = 1024 * 1024


@dataclass(frozen=True)
class KlipperIdentity:
    """What the data dictionary says; None where it was not read in time."""

    app: str = "Klipper"
    version: str | None = None
    mcu: str | None = None


def probe_klipper(
    link: ByteLink, timeout: float = 0.3, budget: float = 2.0
) -> KlipperIdentity | None:
    """Ask for Klipper's data dictionary; return who answered, or None.

    Sends a sync byte and ``identify offset=0 count=40``; any good identify_response
    proves Klipper. The rest of the dictionary (a zlib-compressed JSON of a few KiB whose
    "version" key sorts last) is read 40 bytes a request while ``budget`` seconds from
    the start last; past that the identity comes back with version and mcu unknown. The
    first answer gets ``timeout`` seconds, each later one as much, so the call returns
    within ``budget + timeout`` seconds. Raises TransportError if the link fails.
    """
    start = time.monotonic()
    link.discard_input()
    session = _Session(link, timeout)
    # The sync byte ends any partial block the MCU holds; a leading sync is never
    # answered (src/command.c command_find_block).
    chunk = session.identify(0, prefix=b"\x7e")
    if chunk is None:
        return None
    stream = zlib.decompressobj()
    text = b""
    done = False
    try:
        while chunk is not None and len(text) < TEXT_MAX:
            text += stream.decompress(chunk)
            # The stream's own end spares the request that would return no bytes.
            done = stream.eof or not chunk
            if done or session.offset > DICTIONARY_MAX or time.monotonic() - start > budget:
                break
            chunk = session.identify(session.offset)
    except zlib.error:
        done = False
    return _identity(text, complete=done)


def _identity(text: bytes, *, complete: bool) -> KlipperIdentity:
    if complete:
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            config = data.get("config")
            mcu = config.get("MCU") if isinstance(config, dict) else None
            version = data.get("version")
            return KlipperIdentity(
                app=str(data.get("app") or "Klipper"),
                version=str(version) if version else None,
                mcu=str(mcu) if mcu else None,
            )
    # The JSON is written with sorted keys, so "app" (added in 2024) leads a dictionary
    # of which only the first chunks arrived (scripts/buildcommands.py HandleIdentify).
    match = re.match(rb'\{"app":"([^"\\]{1,40})"', text)
    return KlipperIdentity(app=match.group(1).decode("ascii", "replace") if match else "Klipper")


class _Session:
    """Stop-and-wait identify requests with the MCU's sequence numbers."""

    def __init__(self, link: ByteLink, timeout: float) -> None:
        self.link = link
        self.timeout = timeout
        self.reader = BlockReader()
        #: Klipper starts at 0 after a reset; a nak tells when it expects another.
        self.seq = 0
        #: Bytes of the dictionary received so far.
        self.offset = 0

    def identify(self, offset: int, prefix: bytes = b"") -> bytes | None:
        """The dictionary bytes at ``offset`` (b"" past its end), or None on silence."""
        content = encode_identify(offset, CHUNK)
        self.link.write(prefix + encode_block(self.seq, content))
        deadline = time.monotonic() + self.timeout
        resends = 0
        answer: bytes | None = None
        while (block := self._next_block(deadline)) is not None:
            if not block.is_ack:
                reply = parse_identify_response(block.content)
                if reply is not None and reply[0] == offset:
                    answer = reply[1]
                    self.seq = block.seq
                continue
            if answer is not None:
                break  # the ack that follows every dispatched block
            if block.seq != self.seq and resends < 2:
                # A nak: the MCU expects this sequence number; resend with it.
                resends += 1
                self.seq = block.seq
                self.link.write(encode_block(self.seq, content))
            # A nak naming our own number came from garbage before our block: keep waiting.
        if answer is not None:
            self.offset = offset + len(answer)
        return answer

    def _next_block(self, deadline: float) -> Block | None:
        while (block := self.reader.next_block()) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            data = self.link.read(self.reader.wanted(), left)
            if not data:
                return None
            self.reader.feed(data)
        return block


def request_serial_bootloader(link: ByteLink) -> None:
    """Send the 33 bytes that make Klipper on a UART reboot into its bootloader.

    Only Klipper's UART code looks for them (src/generic/serial_irq.c); on USB-CDC use
    ``touch_1200``. Katapult's flashtool sends them once and waits a second; nothing
    answers. Raises TransportError if the link fails."""
    link.write(SERIAL_BOOTLOADER_REQUEST)


def touch_1200(link: ByteLink) -> bool:
    """Make the USB-CDC 1200-baud touch on an open link: raise DTR, switch to 1200 baud,
    drop DTR. Klipper reboots into its bootloader when the line coding says 1200 while DTR
    is low (src/generic/usb_cdc.c check_reboot); raising DTR first makes the drop the
    trigger, as flash_usb.py and flashtool do. The caller closes the link afterwards and
    looks for the device anew: it re-enumerates.

    Works on whatever the link wraps (a tty, a simulated port). Returns False, having
    done nothing harmful, when the link has no modem lines or refuses 1200 baud (a pty,
    a network port)."""
    if not link.set_lines(dtr=True):
        return False
    try:
        link.baudrate = 1200
    except (TransportError, ValueError):
        return False
    return link.set_lines(dtr=False)
