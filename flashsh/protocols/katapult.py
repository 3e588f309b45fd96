"""Katapult (formerly CanBoot): the same frames over CAN, a UART or USB-CDC.

The node keeps no session: CONNECT tells the application start and block size, blocks
go up in ascending order with SEND_BLOCK (the first block of each flash page erases the
page), SEND_EOF flushes, REQUEST_BLOCK reads back, COMPLETE starts the application. The
link (a serial port, or one node's data stream on a CAN bus) is a ByteLink either way;
how to get a node back into Katapult is its ``door``.

flashsh never sends COMPLETE while blocks written in this session have not been read
back identical, nor after a transfer that stopped halfway: the node then stays in
Katapult and the error says what is on the chip. Frame facts: katapult_frame.
"""

from __future__ import annotations

import contextlib
import struct
import time
from typing import Protocol

from flashsh.chips.katapult import KatapultFlash, katapult_flash, katapult_flash_of_part
from flashsh.errors import FlashshError, ImageError, NoAnswerError, ProtocolError, TargetError
from flashsh.images.image import Image
from flashsh.images.klipper_dict import klipper_build
from flashsh.numbers import hexaddr
from flashsh.protocols import katapult_frame as kf
from flashsh.protocols.base import Bootloader, Capability, MemoryMap, Region, TargetInfo
from flashsh.transports.base import ByteLink

#: flashtool gives every command 2 s (5 s for SEND_BLOCK). A node answers a block in
#: milliseconds, so flashsh waits less and retries sooner; a block that starts an erase
#: unit waits for the data sheet's longest erase.
REPLY_TIMEOUT = 0.5
ATTEMPTS = 4
#: CONNECT during auto-detection: short, so a silent port costs little.
PROBE_TIMEOUT = 0.25
#: A NACK answers a frame the node found damaged; give a late ACK this long to follow.
NACK_GRACE = 0.02
#: COMPLETE resets the node 100 ms after its ACK (katapult src/flashcmd.c).
COMPLETE_SETTLE = 0.2
#: BUSY (documented, sent by no current firmware): flashtool waits 1.5 s.
BUSY_WAIT = 1.5


class Door(Protocol):
    """How this link's node is brought (back) into Katapult."""

    def request_bootloader(self, bootloader: Katapult) -> Katapult:
        """Ask the running application to reboot into Katapult; return the new session."""

    def rejoin(self) -> str:
        """After the node fell silent: "katapult" if it is back in Katapult and ready for
        the same command again (a reset cost it its node id), "klipper" if it now runs
        its application, "" if it cannot tell."""


class _Retry(Exception):
    """One attempt failed in a way a resend may cure."""


def _version_text(word: int) -> str:
    return f"{(word >> 16) & 0xFF}.{(word >> 8) & 0xFF}.{word & 0xFF}"


def _strings(data: bytes) -> list[str]:
    """The NUL-separated, NUL-padded strings of a CONNECT reply."""
    return [part.decode("ascii", "replace") for part in data.split(b"\0") if part]


class Katapult(Bootloader):
    name = "katapult"
    baudrates = (250000,)
    capabilities = Capability.READ | Capability.WRITE | Capability.PAGE_ERASE_ON_WRITE
    verify_before_start = True
    after_start = "`bootloader` brings Katapult back"

    def __init__(
        self,
        link: ByteLink,
        *,
        uuid: str | None = None,
        door: Door | None = None,
        chip: str | None = None,
    ):
        super().__init__(link)
        self.uuid = uuid
        #: The STM32 part the user named: its real flash size and pages.
        self.chip = chip
        self.door = door
        self.protocol_version = ""
        self.app_start = 0
        self.block_size = 64
        self.mcu = ""
        self.software_version = ""
        self.flash: KatapultFlash | None = None
        self.how = ""
        self.pages_written: int | None = None
        #: Blocks sent and not yet read back identical: address -> data.
        self.unverified: dict[int, bytes] = {}
        #: A transfer began and did not reach SEND_EOF.
        self.incomplete = False
        self.retries = 0

    # ------------------------------------------------------------------ frames

    def exchange(
        self,
        command: int,
        payload: bytes = b"",
        *,
        echo: bytes = b"",
        timeout: float = REPLY_TIMEOUT,
        attempts: int = ATTEMPTS,
    ) -> kf.Frame:
        """Send one command and return the ACK that echoes it (and ``echo`` after it).

        Stale replies (a duplicate of an earlier ACK) are skipped, damaged ones and NACKs
        resend the identical frame, as resending is harmless for every command."""
        why = self._attempts(kf.build(command, payload), command, echo, timeout, attempts)
        if isinstance(why, kf.Frame):
            return why
        name = kf.NAMES[command]
        if why != "no answer":
            raise ProtocolError(f"{name} to {self.where()} failed {attempts} times: {why}")
        state = self.door.rejoin() if self.door is not None else ""
        if state == "katapult":
            # It reset and came back in Katapult (node id lost): carry on where it was.
            why = self._attempts(kf.build(command, payload), command, echo, timeout, attempts)
            if isinstance(why, kf.Frame):
                return why
        if state == "klipper":
            raise NoAnswerError(
                f"{self.where()} reset during {name} and now runs its application",
                "if a transfer was running, that application is incomplete: use "
                "`bootloader`, then program again",
            )
        raise NoAnswerError(
            f"{self.where()} did not answer {name} ({attempts} tries)", self.silence_hint()
        )

    def _attempts(
        self, frame: bytes, command: int, echo: bytes, timeout: float, attempts: int
    ) -> kf.Frame | str:
        """The ACK, or why the last of ``attempts`` sends failed."""
        why = "no answer"
        for attempt in range(attempts):
            if attempt:
                self.retries += 1
                self.link.drain(quiet=0.01, limit=0.2)
            self.link.write(frame)
            try:
                return self._await_ack(command, echo, timeout)
            except _Retry as exc:
                why = str(exc)
        return why

    def _await_ack(self, command: int, echo: bytes, timeout: float) -> kf.Frame:
        deadline = time.monotonic() + timeout
        nacked = False
        while True:
            raw = self._read_frame(deadline)
            if raw is None:
                raise _Retry("the node reported a damaged frame (NACK)" if nacked else "no answer")
            try:
                frame = kf.parse(raw)
            except kf.FrameError as exc:
                raise _Retry(f"damaged reply ({exc})") from None
            if frame.command == kf.ACK:
                if (
                    frame.payload[:4] == struct.pack("<I", command)
                    and frame.payload[4 : 4 + len(echo)] == echo
                ):
                    return frame
                continue  # the answer to an earlier, resent request
            if frame.command == kf.NACK:
                # The node found a frame damaged; if that was junk ahead of ours, our
                # ACK is right behind it.
                deadline = min(deadline, time.monotonic() + NACK_GRACE)
                nacked = True
                continue
            if frame.command == kf.BUSY:
                time.sleep(BUSY_WAIT)
                raise _Retry("node busy")
            if frame.command == kf.COMMAND_ERROR:
                raise TargetError(f"{self.where()} refused {kf.NAMES[command]} (COMMAND_ERROR)")
            raise _Retry(f"unexpected reply {frame.name}")

    def _read_frame(self, deadline: float) -> bytes | None:
        """The next header-aligned frame of the declared length, or None at the deadline."""
        buffer = bytearray()
        while True:
            length = kf.frame_length(buffer)
            need = (4 if length is None else length) - len(buffer)
            if need <= 0:
                return bytes(buffer)
            left = deadline - time.monotonic()
            chunk = self.link.read(need, left) if left > 0 else b""
            if not chunk:
                return None
            buffer += chunk
            start = buffer.find(kf.HEADER)
            if start < 0:
                del buffer[: len(buffer) - (buffer[-1:] == kf.HEADER[:1])]
            elif start:
                del buffer[:start]

    # ------------------------------------------------------------------ session

    @classmethod
    def probe(cls, link: ByteLink, *, reset: bool, chip: str | None = None) -> Katapult | None:
        """CONNECT changes nothing on a node; another bootloader sees 8 junk bytes."""
        self = cls(link, chip=chip)
        link.drain(quiet=0.01, limit=0.1)
        try:
            self.connect(timeout=PROBE_TIMEOUT, attempts=2)
        except FlashshError:
            return None
        usb = link.usb_id
        self.how = (
            f"CONNECT answered on USB {usb}" if usb else f"CONNECT answered at {link.baudrate} baud"
        )
        return self

    def connect(self, *, timeout: float = REPLY_TIMEOUT, attempts: int = ATTEMPTS) -> None:
        """CONNECT, and on CAN make sure the node that answers is the one asked for."""
        reply = self.exchange(kf.CONNECT, timeout=timeout, attempts=attempts)
        if len(reply.payload) < 16:
            raise ProtocolError(f"CONNECT reply from {self.where()} is too short")
        self.protocol_version = _version_text(reply.word(1))
        self.app_start = reply.word(2)
        self.block_size = reply.word(3)
        if self.block_size not in (64, 128, 256, 512):
            raise ProtocolError(f"{self.where()} reports block size {self.block_size}")
        strings = _strings(reply.payload[16:])
        self.mcu = strings[0] if strings else "unknown"
        self.software_version = strings[1] if len(strings) > 1 else "?"
        if self.chip:
            self.flash = katapult_flash_of_part(self.mcu, self.chip)
        else:
            self.flash = katapult_flash(self.mcu, self.app_start, self.block_size)
        if self.uuid is not None:
            self._check_uuid()

    def _check_uuid(self) -> None:
        reply = self.exchange(kf.GET_CANBUS_ID)
        found = reply.payload[4:10].hex()
        if found != self.uuid:
            raise ProtocolError(
                f"asked for node {self.uuid}, but node {found} answered",
                "two nodes may share a node id: power-cycle the bus and try again",
            )

    def keep_alive(self) -> None:
        """Katapult has no idle timeout; this only asks whether it still answers (after a
        failed command the session wants to know)."""
        self.exchange(kf.CONNECT, timeout=PROBE_TIMEOUT, attempts=1)

    def where(self) -> str:
        return f"Katapult node {self.uuid}" if self.uuid else f"Katapult on {self.link.description}"

    def silence_hint(self) -> str:
        return (
            "the node may have left the bootloader, or its parser is stuck after a damaged "
            "frame (a known Katapult behaviour): reset the board twice quickly to enter "
            "Katapult, then connect again"
        )

    def identify(self) -> TargetInfo:
        assert self.flash is not None
        details: dict[str, object] = {
            "protocol_version": self.protocol_version,
            "software_version": self.software_version,
            "block_size": self.block_size,
            "application_start": hexaddr(self.app_start),
            "flash_size": f"{self.flash.size // 1024} KiB ({self.flash.size_source}"
            + ("; --chip names the part for its real size)" if not self.chip else ")"),
        }
        if self.uuid:
            details["uuid"] = self.uuid
        if self.pages_written is not None:
            details["pages_written"] = self.pages_written
        return TargetInfo(
            protocol="katapult",
            bootloader=f"Katapult {self.software_version} (protocol {self.protocol_version})",
            chip=self.mcu,
            link=self.link.description,
            # CAN has a bitrate, USB-CDC ignores the baud rate: only a UART has one.
            baudrate=None if self.uuid or self.link.usb_id else self.link.baudrate,
            how=self.how,
            details=details,
        )

    def memory_map(self) -> MemoryMap:
        assert self.flash is not None
        flash = self.flash
        erase = max(
            hi - lo for lo, hi in flash.units_between(self.app_start, flash.end) or [(0, 1)]
        )
        region = Region("flash", flash.base, flash.size, self.block_size, erase)
        return MemoryMap(
            (region,),
            bootloader=(flash.base, self.app_start) if self.app_start > flash.base else None,
            app_start=self.app_start,
            app_start_fixed=True,
            size_hint=None
            if self.chip
            else f"Katapult does not report the flash size; {flash.size // 1024} KiB is the "
            f"{self.mcu} build's default: name the part on the board with --chip",
        )

    def erase_units(self, region: Region, start: int, end: int) -> list[tuple[int, int]]:
        assert self.flash is not None
        return self.flash.units_between(start, end)

    # ------------------------------------------------------------------ memory

    def check_image(self, image: Image) -> None:
        build = klipper_build(image)
        if build is not None and self.mcu and build.mcu.lower() != self.mcu.lower():
            raise ImageError(
                f"{image.source or 'the image'} is Klipper {build.version} built for "
                f"{build.mcu}, but this Katapult runs on {self.mcu}",
                "build Klipper for this board (make menuconfig: the micro-controller)",
            )

    def read(self, region: Region, address: int, length: int) -> bytes:
        out = bytearray()
        first = address - address % self.block_size
        for block in range(first, address + length, self.block_size):
            want = struct.pack("<I", block)
            reply = self.exchange(kf.REQUEST_BLOCK, want, echo=want)
            data = reply.payload[8 : 8 + self.block_size]
            if len(data) != self.block_size:
                raise ProtocolError(f"REQUEST_BLOCK {hexaddr(block)} returned {len(data)} bytes")
            if self.unverified.get(block) == data:
                del self.unverified[block]
            out += data
        skip = address - first
        return bytes(out[skip : skip + length])

    def write_page(self, region: Region, address: int, data: bytes) -> None:
        assert self.flash is not None
        if address % self.block_size or len(data) > self.block_size:
            raise TargetError(f"block at {hexaddr(address)} is not {self.block_size}-aligned")
        data = data.ljust(self.block_size, b"\xff")
        where = struct.pack("<I", address)
        timeout = REPLY_TIMEOUT
        if self.flash.unit_starts_at(address):
            timeout += 2 * self.flash.erase_ms / 1000
        self.incomplete = True
        self.unverified[address] = data
        try:
            self.exchange(kf.SEND_BLOCK, where + data, echo=where, timeout=timeout)
        except TargetError as exc:
            raise TargetError(
                f"{self.where()} refused the block at {hexaddr(address)}: the flash there is "
                "not blank or did not read back right",
                "program the whole image again from its start: each flash page is erased "
                "when its first block arrives",
            ) from exc

    def finish_writes(self) -> None:
        reply = self.exchange(kf.SEND_EOF)
        self.pages_written = reply.word(1) if len(reply.payload) >= 8 else None
        self.incomplete = False

    # ------------------------------------------------------------------ leaving

    def unverified_text(self) -> str:
        from flashsh.operations import ranges_text

        return ranges_text(self.unverified, self.block_size)

    def start_application(self) -> None:
        if self.incomplete:
            raise TargetError(
                f"not starting the application: the last transfer stopped halfway; "
                f"{self.unverified_text()} was written",
                "program the image again; the node stays in Katapult until then",
            )
        if self.unverified:
            raise TargetError(
                f"not starting the application: {self.unverified_text()} was written but "
                "not read back",
                "run `verify_image FILE` first, or `program FILE verify reset`",
            )
        first = self.read(
            Region("flash", self.app_start, self.block_size, self.block_size, 1), self.app_start, 4
        )
        if first in (b"\xff" * 4, b"\x00" * 4):
            # COMPLETE jumps to the application without Katapult's usual blank check
            # (katapult src/generic/armcm_canboot.c): a blank vector table hangs the core.
            raise TargetError(
                f"not starting the application: flash at {hexaddr(self.app_start)} is blank",
                "program an image first; the node stays in Katapult",
            )
        # The ACK may be what was lost: the node starts 100 ms after sending it.
        with contextlib.suppress(NoAnswerError):
            self.exchange(kf.COMPLETE, attempts=2)
        # Katapult answers, then resets 100 ms later: "application started" is true only
        # after that, and until then Katapult would answer a request meant for Klipper.
        time.sleep(COMPLETE_SETTLE)

    def request_bootloader(self) -> Katapult:
        if self.door is None:
            raise TargetError(
                f"flashsh cannot ask {self.link.description} to reboot into Katapult",
                "reset the board twice quickly",
            )
        return self.door.request_bootloader(self)

    def reconnect(self) -> None:
        raise TargetError(
            f"the application is running on {self.uuid or self.link.description}",
            "use `bootloader` to reboot it into Katapult",
        )
