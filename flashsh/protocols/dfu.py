"""Plain USB DFU 1.1: a device that takes one firmware stream and knows no addresses.

Smoothieboard (1d50:6015), LPC176x and dapboot-style bootloaders and any device with a
DFU-mode interface (class FE/01/02, bcdDFUVersion 0x0110). Facts: docs/protocols/dfu.md
and the DFU 1.1 state machine (USB DFU 1.1 §6-7, appendix A).

The device writes block 0 first and every block after it in order; nothing says where
in memory that is, nor how much memory there is. flashsh puts block 0 at a *base*
address (0, a known board's application start, or ``--chip BASE[+SIZE]``) so that
images and commands keep their usual addresses, and accepts only images that begin at
the base. ``write_page`` streams the pages as blocks of wTransferSize, filling gaps
between image segments with 0xFF; ``finish_writes`` ends the download and waits out
manifestation. Reading uploads from block 0 onwards until the wanted bytes pass by.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from flashsh.errors import (
    FlashshError,
    ImageError,
    NoAnswerError,
    ProtocolError,
    TargetError,
    UnsupportedError,
)
from flashsh.numbers import hexaddr, human_size, parse_int
from flashsh.protocols.base import Capability, MemoryMap, Region, TargetInfo
from flashsh.protocols.dfu_modes import dfu_interface, enter_dfu_mode
from flashsh.protocols.dfu_wire import (
    DFUSE_VERSION,
    DfuRequests,
    Functional,
    State,
    Status,
    StatusReply,
    functional_descriptor,
    state_name,
    status_text,
)
from flashsh.protocols.usb_base import FOLLOW_TIMEOUT, UsbBootloader
from flashsh.transports.usb import DeviceGone, UsbDeviceInfo, UsbLink

if TYPE_CHECKING:
    from flashsh.images import Image

#: dfu-util caps control transfers at 4 KiB ("limited to 4k in libusb Linux backend").
MAX_TRANSFER = 4096
#: How long one block, or the manifestation, may keep the device busy in all.
BUSY_LIMIT_S = 30.0
#: When the device does not say: all of a 32-bit address space above the base.
ADDRESS_SPACE = 1 << 32
#: Boards whose bootloader is known: USB id -> (base, size, chip, what). Smoothieboard:
#: triffid/LPC17xx-DFU-Bootloader sbl_config.h, USER_START_SECTOR 4 (0x4000) to the
#: end of the LPC1769's 512 KiB; its uploads never end short (dfu.c DFU_Upload).
KNOWN_LAYOUTS: dict[str, tuple[int, int, str, str]] = {
    "1d50:6015": (0x4000, 0x7C000, "LPC1769", "Smoothieboard bootloader, 16 KiB"),
}
_BUSY = (State.DNLOAD_SYNC, State.DNBUSY, State.MANIFEST_SYNC, State.MANIFEST)


@dataclass(frozen=True)
class Layout:
    """Where block 0 lands and how much memory follows (None: the device did not say)."""

    base: int
    size: int | None
    source: str
    chip: str = "unknown chip"


def layout_for(chip: str | None, usb_id: str) -> Layout:
    """The layout ``--chip BASE[+SIZE]`` gives, else a known board's, else base 0 and
    no size. Raises TargetError for a ``--chip`` that is not that form."""
    if chip:
        base_text, _, size_text = chip.partition("+")
        try:
            base = parse_int(base_text)
            size = parse_int(size_text) if size_text else None
        except ValueError:
            base = size = -1
        if base < 0 or (size is not None and size <= 0) or base + (size or 0) > ADDRESS_SPACE:
            raise TargetError(
                f"--chip {chip!r} does not describe a plain DFU device's memory",
                "give where block 0 lands and, if known, the size: --chip 0x08002000 "
                "or --chip 0x08002000+120K",
            )
        return Layout(base, size, "--chip")
    if usb_id in KNOWN_LAYOUTS:
        base, size, chip_name, what = KNOWN_LAYOUTS[usb_id]
        return Layout(base, size, what, chip_name)
    return Layout(0, None, "not reported by DFU")


# ---------------------------------------------------------------- transfers


@dataclass
class _Stream:
    """One download: the next block number, the address the next byte lands at, and
    bytes waiting to fill a block."""

    block: int = 0
    at: int = 0
    pending: bytearray = field(default_factory=bytearray)


@dataclass
class _Upload:
    """One upload: the last block received, where it lies, whether it was the end."""

    block: int = 0
    at: int = 0
    data: bytes = b""
    ended: bool = False


class Dfu(UsbBootloader):
    name = "dfu"
    kinds = ("dfu",)
    no_read_reason = (
        "its DFU descriptor says it cannot upload (bitCanUpload is 0): it only takes downloads"
    )
    after_start = (
        "the next command detaches the application back into DFU mode if it has a DFU "
        "run-time interface; otherwise put the board into DFU mode and `connect`"
    )

    def __init__(self, link: UsbLink) -> None:
        super().__init__(link)
        self.capabilities = Capability.WRITE | Capability.PAGE_ERASE_ON_WRITE
        self.requests = DfuRequests(link)
        self.functional = Functional(0, 0, 0, 0)
        self.alt_names: list[str | None] = []
        self.layout = Layout(0, None, "")
        self.transfer = 64
        #: The run-time device it was detached from, if it was.
        self.runtime: UsbDeviceInfo | None = None
        #: The device left DFU mode (manifestation, reset); the next access follows it.
        self.rebooted = False
        self._checked: Image | None = None
        self._notes: list[str] = []
        self._stream: _Stream | None = None
        self._upload: _Upload | None = None

    @classmethod
    def attach(cls, link: UsbLink, *, chip: str | None = None) -> UsbBootloader:
        runtime = enter_dfu_mode(link)
        if runtime is not None and functional_descriptor(link).dfu_version == DFUSE_VERSION:
            from flashsh.protocols import usb_session_for  # came back as ST's dialect

            return cast(UsbBootloader, usb_session_for(link, chip=chip))
        bootloader = cls(link)
        bootloader.chip_hint = chip
        bootloader.runtime = runtime
        bootloader.start()
        return bootloader

    def start(self) -> None:
        iface = dfu_interface(self.link.device)
        if iface is None:
            raise ProtocolError(f"{self.link.info.usb_id} has no DFU interface")
        number = iface[0]
        self.alt_names = [self.link.string(a.iInterface) for a in self.link.alt_settings(number)]
        self.functional = functional_descriptor(self.link)
        self.layout = layout_for(self.chip_hint, self.link.info.usb_id)
        max_packet = self.link.device.bMaxPacketSize0 or 64
        self.transfer = max(min(self.functional.transfer_size, MAX_TRANSFER), max_packet)
        self.capabilities = Capability.WRITE | Capability.PAGE_ERASE_ON_WRITE
        if self.functional.can_upload:
            self.capabilities |= Capability.READ
        self.link.claim(number, 0)
        self.requests = DfuRequests(self.link, number)
        self.rebooted = False
        self._stream = self._upload = None
        self._to_idle()

    # ------------------------------------------------------------------ facts

    def identify(self) -> TargetInfo:
        f = self.functional
        details: dict[str, object] = {
            "usb_id": self.link.info.usb_id,
            "dfu_version": f"{f.dfu_version >> 8}.{f.dfu_version & 0xFF:02x}",
            "transfer_size": self.transfer,
            "manifestation": "tolerant (stays in DFU mode)"
            if f.manifestation_tolerant
            else "not tolerant (reboots after a download)",
            "upload": "yes" if f.can_upload else "no (write only)",
            "will_detach": f.will_detach,
            "block_0_at": f"{hexaddr(self.layout.base)} ({self.layout.source})",
            "memory_size": human_size(self.layout.size)
            if self.layout.size
            else "not reported by DFU (give --chip BASE+SIZE)",
        }
        if len(self.alt_names) > 1:
            details["alt_settings"] = ", ".join(
                f"{n}={name or '?'}" for n, name in enumerate(self.alt_names)
            )
        if self.runtime:
            details["run_time_id"] = self.runtime.usb_id
        product = self.link.info.product or self.link.info.what
        return TargetInfo(
            protocol=self.name,
            bootloader=f"USB DFU {details['dfu_version']} ({product})",
            chip=self.layout.chip,
            link=self.link.description,
            how=f"detached from run-time mode ({self.runtime.usb_id})"
            if self.runtime
            else "DFU mode",
            details=details,
        )

    def memory_map(self) -> MemoryMap:
        base, size = self.layout.base, self.layout.size
        known = size is not None
        size = size or ADDRESS_SPACE - base
        # One erase unit over everything: a download rewrites the stream from block 0,
        # so `diff` sends every page or none (operations._whole_units_if_erased_on_write).
        access = "rw" if self.functional.can_upload else "w"
        # Pages line up with the base; the stream packs them into wTransferSize blocks.
        page = math.gcd(base, self.transfer)
        region = Region("flash", base, size, page, size, access)
        return MemoryMap(
            (region,),
            app_start=base,
            size_hint=None
            if known
            else "plain DFU reports neither where its memory starts nor its size: give "
            "them with --chip BASE+SIZE",
        )

    def check_request(self, image: Image, *, diff: bool) -> None:
        """Refuse what a stream from block 0 cannot write, before the fit check and
        whatever ``force`` says; remember the image for the stream that follows."""
        if image.format == "dfuse":
            raise ImageError(
                f"{image.source} is a DfuSe file (ST's format, addresses per alternate "
                "setting); this device speaks plain DFU 1.1",
                "program the .bin, or a .dfu made with dfu-suffix",
            )
        base = self.layout.base
        if image.start != base:
            raise ImageError(
                f"{image.source} starts at {hexaddr(image.start)}, but a DFU device writes "
                f"from its first block, which flashsh places at {hexaddr(base)}",
                f"program the .bin (it goes to {hexaddr(base)}), or connect with --chip "
                f"{hexaddr(image.start)} if the device's memory starts there",
            )
        self._checked = image

    def check_image(self, image: Image) -> None:
        """Refuse a .dfu file whose suffix names another USB device (as dfu-util does:
        the run-time or the DFU-mode id may match)."""
        from flashsh.images.dfu_file import usb_id_mismatch

        ids = [(self.link.info.vid, self.link.info.pid)]
        if self.runtime:
            ids.append((self.runtime.vid, self.runtime.pid))
        mismatch = usb_id_mismatch(image, *ids)
        if mismatch:
            raise ImageError(mismatch, "use the file built for this board, or add `force`")

    def write_notes(self) -> list[str]:
        notes, self._notes = self._notes, []
        return notes

    # ------------------------------------------------------------------ state

    def _to_idle(self) -> StatusReply:
        """Bring the device to dfuIDLE as dfu-util does (dfu.md §3.1 step 1)."""
        deadline = time.monotonic() + BUSY_LIMIT_S
        reply = self.requests.get_status()
        for _ in range(8):
            state = reply.state
            if state == State.IDLE:
                return reply
            if state == State.ERROR:
                self.requests.clear_status()
            elif state in (State.DNLOAD_IDLE, State.UPLOAD_IDLE):
                self.requests.abort()
            elif state in _BUSY and time.monotonic() < deadline:
                time.sleep(reply.poll_ms / 1000)
            elif state == State.MANIFEST_WAIT_RESET:
                raise ProtocolError(
                    f"{self.link.info.usb_id} finished a download and waits for a USB reset",
                    "`reset` it, or replug the board",
                )
            else:
                break
            reply = self.requests.get_status()
        raise ProtocolError(
            f"{self.link.info.usb_id} stays in {state_name(reply.state)} "
            f"({status_text(reply.status)}) instead of dfuIDLE",
            "replug the board and connect again",
        )

    def _poll(self, what: str, done: tuple[State, ...]) -> StatusReply:
        """GETSTATUS until the device leaves its busy states (sleeping bwPollTimeout
        between polls); raise with the device's status when it reports an error."""
        deadline = time.monotonic() + BUSY_LIMIT_S
        while True:
            reply = self.requests.get_status()
            if reply.status != Status.OK or reply.state == State.ERROR:
                raise _refused(what, reply)
            if reply.state in done:
                return reply
            if reply.state not in _BUSY:
                raise ProtocolError(
                    f"{what}: the device went to {state_name(reply.state)} unexpectedly"
                )
            if time.monotonic() > deadline:
                raise NoAnswerError(
                    f"{what}: the device stayed busy for over {BUSY_LIMIT_S:g} s",
                    "replug the board and try again",
                )
            time.sleep(reply.poll_ms / 1000)

    def _explain_stall(self, exc: ProtocolError, what: str) -> FlashshError:
        """A stalled request, explained by the status the device then reports."""
        if isinstance(exc, NoAnswerError):
            return exc
        try:
            reply = self.requests.get_status()
        except FlashshError:
            return exc
        return _refused(what, reply)

    def _back_in_dfu_mode(self) -> None:
        if self.rebooted:
            self.reconnect()

    def ready(self) -> None:
        self._back_in_dfu_mode()

    def keep_alive(self) -> None:
        if not self.rebooted:
            self.requests.get_state()

    def reconnect(self) -> None:
        """Follow the board back into DFU mode after it left (manifestation, reset):
        a device with a run-time interface is detached again."""
        try:
            if self.link.gone():
                found = self.link.follow(lambda f: dfu_interface(f.device) is not None,
                                         FOLLOW_TIMEOUT, "DFU device")  # fmt: skip
                self.link.reopen(found)
        except DeviceGone as exc:
            raise DeviceGone(
                f"{self.link.info.usb_id} did not come back in DFU mode",
                "put the board into its DFU bootloader (or replug it), then `connect` again",
            ) from exc
        self.runtime = enter_dfu_mode(self.link) or self.runtime
        self.start()

    # ------------------------------------------------------------------ writing

    def write_page(self, region: Region, address: int, data: bytes) -> None:
        self._back_in_dfu_mode()
        stream = self._stream
        if stream is None:
            stream = self._stream = self._begin_stream(address, data)
        if address < stream.at:
            raise TargetError(
                f"plain DFU writes one stream from {hexaddr(self.layout.base)}: "
                f"{hexaddr(address)} comes after {hexaddr(stream.at)} was written",
                "program the whole image once",
            )
        # Between image segments the device still needs bytes: blank flash reads 0xFF.
        stream.pending += b"\xff" * (address - stream.at) + data
        stream.at = address + len(data)
        while len(stream.pending) >= self.transfer:
            self._send_block(stream, bytes(stream.pending[: self.transfer]))
            del stream.pending[: self.transfer]

    def _begin_stream(self, address: int, data: bytes) -> _Stream:
        planned, self._checked = self._checked, None
        if planned is not None and planned.data_at(address, len(data)) != data:
            planned = None  # left over from a program that stopped before writing
        base = self.layout.base
        if address != base:
            raise TargetError(
                f"plain DFU writes one stream from {hexaddr(base)}; it cannot start at "
                f"{hexaddr(address)}",
                "program a whole image that starts there",
            )
        if planned is None and self.layout.size is None:
            raise UnsupportedError(
                "plain DFU has no erase or patch, and this device does not report its "
                "memory size, so flashsh writes only whole images here",
                "program FILE; to write 0xFF over the memory give its size with --chip BASE+SIZE",
            )
        self._upload = None
        self._to_idle()
        return _Stream(at=base)

    def _send_block(self, stream: _Stream, data: bytes) -> None:
        offset = stream.block * self.transfer
        what = f"block {stream.block} ({hexaddr(self.layout.base + offset)})"
        try:
            self.requests.dnload(stream.block & 0xFFFF, data)
        except ProtocolError as exc:
            self._stream = None
            raise self._explain_stall(exc, f"the device refused {what}") from exc
        try:
            self._poll(f"the device refused {what}", (State.DNLOAD_IDLE,))
        except FlashshError:
            self._stream = None
            raise
        stream.block += 1

    def finish_writes(self) -> None:
        """Send what is left, then the zero-length DNLOAD that ends the download, and
        see manifestation through (dfu.md §3.1 steps 3-4)."""
        stream, self._stream = self._stream, None
        if stream is None:
            return
        if stream.pending:
            self._send_block(stream, bytes(stream.pending))
        try:
            self.requests.dnload(stream.block & 0xFFFF, b"")
        except ProtocolError as exc:
            raise self._explain_stall(exc, "the device refused the end of the download") from exc
        self._manifest()

    def _manifest(self) -> None:
        tolerant = self.functional.manifestation_tolerant
        deadline = time.monotonic() + BUSY_LIMIT_S
        while True:
            try:
                reply = self.requests.get_status()
            except (DeviceGone, ProtocolError):
                if tolerant:
                    raise
                # Not tolerant: the device may leave the bus as soon as it is done
                # (the Smoothieboard bootloader disconnects itself).
                self._reset_after_manifest()
                return
            if reply.status != Status.OK or reply.state == State.ERROR:
                raise _refused("the device did not accept the download", reply)
            if reply.state == State.IDLE:
                return  # manifestation tolerant: still in DFU mode, ready to read back
            if reply.state == State.MANIFEST_WAIT_RESET:
                self._reset_after_manifest()
                return
            if reply.state not in _BUSY or time.monotonic() > deadline:
                raise ProtocolError(
                    f"the device is in {state_name(reply.state)} after the download "
                    "instead of finishing manifestation",
                    "replug the board; the image may not have been taken",
                )
            time.sleep(reply.poll_ms / 1000)

    def _reset_after_manifest(self) -> None:
        """dfuMANIFEST-WAIT-RESET: only a USB reset moves the device on; it then runs
        the new firmware. A device that has gone already has rebooted by itself."""
        self.link.reset()
        self.rebooted = True
        self._notes.append(
            "the device is not manifestation tolerant: it left DFU mode to run the new "
            "firmware, and the next command follows it back if it can"
        )

    # ------------------------------------------------------------------ reading

    def read(self, region: Region, address: int, length: int) -> bytes:
        if not self.functional.can_upload:
            raise UnsupportedError(f"{self.name} cannot read back", self.no_read_reason)
        self._back_in_dfu_mode()
        upload = self._upload
        if upload is None or address < upload.at:
            self._to_idle()
            upload = self._upload = _Upload(at=self.layout.base)
        out = bytearray()
        while len(out) < length:
            here = address + len(out)
            end = upload.at + len(upload.data)
            if here < end:
                take = upload.data[here - upload.at : here - upload.at + length - len(out)]
                out += take
                continue
            if upload.ended:
                raise TargetError(
                    f"the device's memory ends at {hexaddr(end)}: its upload stopped there",
                    f"read at most {end - self.layout.base} bytes from "
                    f"{hexaddr(self.layout.base)}, or give the size with --chip BASE+SIZE",
                )
            self._next_upload_block(upload)
        return bytes(out)

    def _next_upload_block(self, upload: _Upload) -> None:
        what = f"upload block {upload.block}"
        try:
            data = self.requests.upload(upload.block & 0xFFFF, self.transfer)
        except ProtocolError as exc:
            self._upload = None
            raise self._explain_stall(exc, f"the device refused {what}") from exc
        upload.at += len(upload.data)
        upload.data = data
        upload.block += 1
        # A short block ends the upload; the device is back in dfuIDLE (DFU 1.1 A.2.10).
        upload.ended = len(data) < self.transfer

    # ------------------------------------------------------------------ leaving

    def start_application(self) -> None:
        """A USB reset in dfuIDLE makes a DFU device run its firmware (DFU 1.1 §6.1.2)."""
        if self.rebooted:
            return
        self._stream = self._upload = None
        with contextlib.suppress(FlashshError):  # reset anyway: it restarts the device
            self._to_idle()
        self.link.reset()
        self.rebooted = True

    def follow_after_start(self) -> None:
        """Stay on this session: the next command follows the board back (detaching an
        application that has a DFU run-time interface)."""
        return None


def _refused(what: str, reply: StatusReply) -> FlashshError:
    """The error for a device that reports an error status."""
    text = status_text(reply.status)
    if reply.status == Status.ERR_ADDRESS:
        return TargetError(
            f"{what}: {text}",
            "the image is larger than the device's memory (plain DFU does not report its size)",
        )
    if reply.status == Status.ERR_NOTDONE:
        return ProtocolError(f"{what}: {text}", "the device expected a longer image")
    return ProtocolError(
        f"{what}: {text}, state {state_name(reply.state)}", "replug the board and try again"
    )
