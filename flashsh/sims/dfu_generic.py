"""A plain USB DFU 1.1 device that follows the specification to the letter: ``sim://dfu``.

The state machine is DFU 1.1's (§6-7, appendix A; dfu.md §3), with no dialect:

* DNLOAD with data from dfuIDLE or dfuDNLOAD-IDLE goes to dfuDNLOAD-SYNC; the next
  GETSTATUS writes the block and answers dfuDNBUSY with the write time (or
  dfuDNLOAD-IDLE when the write takes none); after bwPollTimeout the device is back in
  dfuDNLOAD-SYNC and the next GETSTATUS answers dfuDNLOAD-IDLE. Blocks must come
  numbered 0, 1, 2, ... and land one after the other from the start of memory;
* a zero-length DNLOAD ends the download (dfuMANIFEST-SYNC); from dfuIDLE, before any
  data, it is refused with errNOTDONE. GETSTATUS then answers dfuMANIFEST and, once the
  manifestation is over, dfuIDLE (``tolerant=1``) or dfuMANIFEST-WAIT-RESET, where only a
  USB reset moves the device on: it runs the new firmware;
* UPLOAD from dfuIDLE or dfuUPLOAD-IDLE (``upload=1``) returns memory from the start,
  block after block; a block shorter than asked for is the end and the device is back
  in dfuIDLE;
* every other request in a state that does not expect it is stalled and the device goes
  to dfuERROR with errSTALLEDPKT; CLRSTATUS leaves dfuERROR.

``runtime=1`` starts the device as its application with a DFU run-time interface
(protocol 1, appIDLE): DFU_DETACH moves it to appDETACH and a USB reset within
wDetachTimeOut brings it back on the bus in DFU mode (``willdetach=1``: it re-enumerates
by itself). Running the firmware after a download brings the application back the same
way; without ``runtime=1`` the board leaves the bus for good, as an application without
USB does. A USB reset in DFU mode with no valid firmware (nothing downloaded since the
start, no ``image``) comes back in DFU mode with dfuERROR/errFIRMWARE.

Time: control transfers cost full-speed frames (SimUsbDevice); a block costs ``poll``
ms of writing, reported honestly as bwPollTimeout. The figure is a stand-in for a small
flash page write (UNCONFIRMED for any particular chip). With ``throttle=0`` nothing
waits and every poll time is 0 unless ``poll`` is given. Requests while the device is
dfuDNBUSY are stalled (DFU 1.1: the device does not answer then).
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field
from typing import NoReturn

from flashsh.numbers import parse_int
from flashsh.protocols.dfu_wire import Functional, Request, State, Status
from flashsh.sims.board import number_option, option_values
from flashsh.sims.dfuse_faults import DfuFaults
from flashsh.sims.faults import fault_count
from flashsh.sims.usb_device import AltSetting, Gone, Identity, Setup, Silent, SimUsbDevice, Stall

OPTIONS = {
    "tolerant": "1 = manifestation tolerant (stays in DFU mode); 0 (default) = waits for "
    "a USB reset after a download, then runs the new firmware",
    "upload": "1 (default) = can upload (read back); 0 = write only",
    "transfer": "wTransferSize in bytes (default 512)",
    "size": "memory in bytes (default 496K, the Smoothieboard's application area)",
    "runtime": "1 = start as the application with a DFU run-time interface (appIDLE)",
    "willdetach": "1 = bitWillDetach: re-enumerates in DFU mode by itself on DFU_DETACH",
    "manifest": "wait (default): answer dfuMANIFEST-WAIT-RESET; vanish: leave the bus "
    "when manifestation ends, as the Smoothieboard bootloader does",
    "usb_id": "VID:PID in DFU mode (default 1d50:6015, the Smoothieboard bootloader)",
    "app_id": "VID:PID of the application (runtime=1; default: usb_id)",
    "poll": "ms of writing per block, reported as bwPollTimeout (default 5; 0 with throttle=0)",
    "image": ".bin in memory before the start (a valid firmware)",
    "throttle": "1 = real time (default), 0 = no delays",
    "fault": "stall:N timeout:N vanish:N at DFU class request N (repeatable)",
}
FAULT_KINDS = ("stall", "timeout", "vanish")
DETACH_TIMEOUT_MS = 1000  # wDetachTimeOut the device advertises
MANIFEST_MS = 20  # manifestation (marking the firmware valid); a guess, UNCONFIRMED
REBOOT_S = 0.05  # from reset or detach to being on the bus again


@dataclass
class Settings:
    tolerant: bool = False
    upload: bool = True
    transfer: int = 512
    size: int = 0x7C000
    runtime: bool = False
    will_detach: bool = False
    manifest_vanish: bool = False
    usb_id: tuple[int, int] = (0x1D50, 0x6015)
    app_id: tuple[int, int] | None = None
    poll_ms: int | None = None
    throttle: bool = True
    faults: DfuFaults = field(default_factory=DfuFaults)

    @property
    def attributes(self) -> int:
        # bmAttributes: bitCanDnload, bitCanUpload, bitManifestationTolerant, bitWillDetach
        return 1 | self.upload << 1 | self.tolerant << 2 | self.will_detach << 3


class GenericDfu(SimUsbDevice):
    """One plain DFU device; ``mode`` is "dfu" or "app" (run-time interface)."""

    def __init__(self, settings: Settings | None = None, image: bytes = b"") -> None:
        self.settings = settings = settings or Settings()
        super().__init__(throttle=settings.throttle)
        if len(image) > settings.size:
            raise ValueError(f"image of {len(image)} bytes does not fit size={settings.size}")
        self.memory = bytearray(b"\xff" * settings.size)
        self.memory[: len(image)] = image
        #: The memory holds a complete firmware (an ``image``, or a finished download).
        self.valid = bool(image)
        self.poll_ms = settings.poll_ms if settings.poll_ms is not None else (
            5 if settings.throttle else 0
        )  # fmt: skip
        #: Requests the device served, for tests: (name, wValue, wLength, state before).
        self.log: list[tuple[str, int, int, str]] = []
        #: Completed downloads, and times the firmware started.
        self.downloads = 0
        self.boots = 0
        self._enter("app" if settings.runtime else "dfu")

    @classmethod
    def from_options(cls, options: dict[str, list[str]], host_baud: int | None) -> GenericDfu:
        one = option_values("dfu", options, OPTIONS)
        flag = {k: _flag(k, one[k]) for k in ("tolerant", "upload", "runtime", "willdetach")
                if k in one}  # fmt: skip
        manifest = one.get("manifest", "wait").lower()
        if manifest not in ("wait", "vanish"):
            raise ValueError(f"option manifest={manifest!r}: wait or vanish")
        settings = Settings(
            tolerant=flag.get("tolerant", False),
            upload=flag.get("upload", True),
            transfer=_size("transfer", one.get("transfer", "512"), limit=0xFFFF),
            size=_size("size", one.get("size", "496K"), limit=1 << 32),
            runtime=flag.get("runtime", False),
            will_detach=flag.get("willdetach", False),
            manifest_vanish=manifest == "vanish",
            usb_id=_usb_id("usb_id", one.get("usb_id", "1d50:6015")),
            app_id=_usb_id("app_id", one["app_id"]) if "app_id" in one else None,
            poll_ms=int(number_option("poll", one["poll"])) if "poll" in one else None,
            throttle=bool(number_option("throttle", one.get("throttle", "1"))),
            faults=_faults(options.get("fault", [])),
        )
        image = b""
        if "image" in one:
            try:
                with open(one["image"], "rb") as file:
                    image = file.read()
            except OSError as exc:
                raise ValueError(f"option image={one['image']!r}: {exc.strerror}") from None
        return cls(settings, image)

    # ------------------------------------------------------------ descriptors

    def _enter(self, mode: str) -> None:
        """Take on the descriptors and state of DFU mode or of the application."""
        s = self.settings
        self.mode = mode
        functional = Functional(s.attributes, DETACH_TIMEOUT_MS, s.transfer, 0x0110).pack()
        vid, pid = s.usb_id if mode == "dfu" else (s.app_id or s.usb_id)
        if mode == "dfu":
            self.identity = Identity(vid, pid, 0x0100, "flashsh", "DFU bootloader", "SIMDFU1")
            self.alt_settings = (AltSetting(0, 0, 0xFE, 0x01, 0x02, "Flash", extra=functional),)
            self.state = State.IDLE
        else:
            self.identity = Identity(vid, pid, 0x0100, "flashsh", "Application", "SIMDFU1")
            self.alt_settings = (
                AltSetting(0, 0, 0xFE, 0x01, 0x01, "DFU run-time", extra=functional),
            )
            self.state = State.APP_IDLE
        self.status = Status.OK
        self._busy_until = 0.0
        self._pending: bytes | None = None
        self._block = 0
        self._offset = 0
        self._manifested = False
        self._detach_deadline = 0.0

    # ---------------------------------------------------------------- requests

    def control(self, setup: Setup, data: bytes) -> bytes:
        if setup.kind != 1 or setup.request_type & 0x1F != 1 or setup.index != 0:
            return super().control(setup, data)
        fault = self.settings.faults.next_request()
        if fault == "vanish":
            self.vanish()
            raise Gone("vanished")
        if fault == "timeout":
            raise Silent("request lost")
        name = Request(setup.request).name if setup.request <= 6 else str(setup.request)
        self.log.append((name, setup.value, setup.length or len(data), self.state.name))
        if fault == "stall":
            self._stall("fault")
        if self.mode == "app":
            return self._runtime(setup)
        if self.state == State.DNBUSY:
            if self._clock() < self._busy_until:
                self._stall("busy")  # DFU 1.1: no requests until bwPollTimeout is over
            self.state = State.DNLOAD_SYNC
        if self.state == State.MANIFEST:
            self._end_manifestation()
        handler = {
            Request.DNLOAD: lambda: self._dnload(setup, data),
            Request.UPLOAD: lambda: self._upload(setup),
            Request.GETSTATUS: self._get_status,
            Request.CLRSTATUS: self._clear_status,
            Request.GETSTATE: lambda: bytes([self.state]),
            Request.ABORT: self._abort,
        }.get(setup.request)  # type: ignore[call-overload]
        if handler is None:
            self._stall("not a DFU-mode request")  # DFU_DETACH and unknown requests
        return handler()

    def _clock(self) -> float:
        return time.monotonic() if self.throttle else self.elapsed

    def _stall(self, why: str, status: Status = Status.ERR_STALLEDPKT) -> NoReturn:
        if self.mode == "dfu" and self.state != State.MANIFEST_WAIT_RESET:
            self.state, self.status = State.ERROR, status
        raise Stall(why)

    def _dnload(self, setup: Setup, data: bytes) -> bytes:
        if not data:
            if self.state == State.DNLOAD_IDLE:
                self.state, self._manifested = State.MANIFEST_SYNC, False
                return b""
            self._stall("zero-length DNLOAD with nothing downloaded", Status.ERR_NOTDONE)
        if self.state not in (State.IDLE, State.DNLOAD_IDLE) or len(data) > self.settings.transfer:
            self._stall("DNLOAD not expected")
        if self.state == State.IDLE:
            self._block, self._offset = 0, 0
            self.valid = False  # a half-written firmware does not run
        if setup.value != self._block & 0xFFFF:
            self._stall(f"block {setup.value}, expected {self._block}")  # UNCONFIRMED reaction
        self._pending = data
        self.state = State.DNLOAD_SYNC
        return b""

    def _get_status(self) -> bytes:
        poll = 0
        if self.state == State.DNLOAD_SYNC:
            poll = self._write_pending()
        elif self.state == State.MANIFEST_SYNC and self._manifested:
            self.state = State.IDLE  # manifestation tolerant: ready for more
        elif self.state == State.MANIFEST_SYNC:
            self.state, poll = State.MANIFEST, MANIFEST_MS if self.poll_ms else 0
            self.elapsed += MANIFEST_MS / 1000
            self._busy_until = self._clock() + (poll / 1000 if self.throttle else 0)
        return struct.pack("<B", self.status) + poll.to_bytes(3, "little") + bytes([self.state, 0])

    def _write_pending(self) -> int:
        """The GETSTATUS after a DNLOAD: write the block, or report it done."""
        block, self._pending = self._pending, None
        if block is None:
            self.state = State.DNLOAD_IDLE  # dfuDNBUSY is over: the block is written
            return 0
        end = self._offset + len(block)
        if end > len(self.memory):
            self.state, self.status = State.ERROR, Status.ERR_ADDRESS
            return 0
        self.memory[self._offset : end] = block
        self._offset, self._block = end, self._block + 1
        self.elapsed += self.poll_ms / 1000  # the write runs while the host waits
        if not self.poll_ms:
            self.state = State.DNLOAD_IDLE
            return 0
        self.state = State.DNBUSY
        self._busy_until = self._clock() + (self.poll_ms / 1000 if self.throttle else 0)
        return self.poll_ms

    def _end_manifestation(self) -> None:
        """dfuMANIFEST is over once its poll time has passed."""
        if self._clock() < self._busy_until:
            self._stall("manifesting")
        self.valid, self._manifested = True, True
        self.downloads += 1
        if self.settings.tolerant:
            self.state = State.MANIFEST_SYNC
            return
        self.state = State.MANIFEST_WAIT_RESET
        if self.settings.manifest_vanish:
            self._run_firmware()
            raise Gone("left the bus after manifestation")

    def _upload(self, setup: Setup) -> bytes:
        if (
            not self.settings.upload
            or self.state not in (State.IDLE, State.UPLOAD_IDLE)
            or setup.length > self.settings.transfer
        ):
            self._stall("UPLOAD not expected")
        if self.state == State.IDLE:
            self._block, self._offset = 0, 0
        if setup.value != self._block & 0xFFFF:
            self._stall(f"upload block {setup.value}, expected {self._block}")
        answer = bytes(self.memory[self._offset : self._offset + setup.length])
        self._offset += len(answer)
        self._block += 1
        # A short frame ends the upload (DFU 1.1 A.2.10).
        self.state = State.UPLOAD_IDLE if len(answer) == setup.length else State.IDLE
        return answer

    def _clear_status(self) -> bytes:
        if self.state != State.ERROR:
            self._stall("CLRSTATUS outside dfuERROR")
        self.state, self.status = State.IDLE, Status.OK
        return b""

    def _abort(self) -> bytes:
        if self.state not in (State.IDLE, State.DNLOAD_IDLE, State.UPLOAD_IDLE):
            self._stall("ABORT not expected")
        self.state = State.IDLE
        return b""

    def _runtime(self, setup: Setup) -> bytes:
        """The application's DFU run-time interface: GETSTATUS, GETSTATE, DETACH."""
        if setup.request == Request.GETSTATUS:
            return bytes([Status.OK, 0, 0, 0, self.state, 0])
        if setup.request == Request.GETSTATE:
            return bytes([self.state])
        if setup.request == Request.DETACH and self.state == State.APP_IDLE:
            self.state = State.APP_DETACH
            wait_ms = min(setup.value, DETACH_TIMEOUT_MS)
            self._detach_deadline = time.monotonic() + wait_ms / 1000
            if self.settings.will_detach:
                self._switch("dfu")
            return b""
        raise Stall("not a run-time request")

    # --------------------------------------------------------------- lifecycle

    def bus_reset(self) -> None:
        super().bus_reset()
        with self.lock:
            if self.mode == "app":
                detached = self.state == State.APP_DETACH
                in_time = time.monotonic() <= self._detach_deadline
                self._switch("dfu" if detached and in_time else "app")
            else:
                self._run_firmware()

    def _run_firmware(self) -> None:
        """Leave DFU mode for the firmware, if there is a valid one."""
        if not self.valid:
            self._switch("dfu")
            self.state, self.status = State.ERROR, Status.ERR_FIRMWARE
            return
        self.boots += 1
        if self.settings.runtime:
            self._switch("app")
        else:
            self.vanish()  # the application has no USB

    def _switch(self, mode: str) -> None:
        """Re-enumerate as ``mode`` (descriptors change only once off the bus)."""
        if self.bus is None:
            self._enter(mode)
            return
        self.vanish()
        self._enter(mode)
        self.reenumerate(after=REBOOT_S if self.throttle else 0.01)


def _flag(name: str, text: str) -> bool:
    if text not in ("0", "1"):
        raise ValueError(f"option {name}={text!r}: 0 or 1")
    return text == "1"


def _size(name: str, text: str, *, limit: int) -> int:
    try:
        value = parse_int(text)
    except ValueError:
        raise ValueError(f"option {name}={text!r} needs a number of bytes") from None
    if not 0 < value <= limit:
        raise ValueError(f"option {name}={text!r} must be between 1 and {limit}")
    return value


def _usb_id(name: str, text: str) -> tuple[int, int]:
    vid, _, pid = text.partition(":")
    try:
        return int(vid, 16), int(pid, 16)
    except ValueError:
        raise ValueError(f"option {name}={text!r}: VID:PID in hex, like 1d50:6015") from None


def _faults(specs: list[str]) -> DfuFaults:
    faults = DfuFaults()
    for item in (part.strip() for spec in specs for part in spec.split(",")):
        if item:
            kind, _, arg = item.partition(":")
            if kind.lower() not in FAULT_KINDS:
                raise ValueError(f"unknown fault {item!r} for sim://dfu; valid: {OPTIONS['fault']}")
            faults.at[fault_count(item, kind, arg)] = kind.lower()
    return faults
