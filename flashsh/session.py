"""A live session: one link, one bootloader, kept awake while the user thinks."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from flashsh.errors import FlashshError
from flashsh.protocols import ProbeOptions, detect
from flashsh.protocols.base import Bootloader, Capability, MemoryMap, TargetInfo
from flashsh.transports.serial import open_serial

#: Idle time after which the keep-alive speaks; optiboot gives up after about 1 s.
KEEP_ALIVE_PERIOD = 0.25


class Session:
    """Owns the bootloader connection; every command goes through :meth:`use`.

    A background thread sends the protocol's keep-alive while the shell is idle, because
    optiboot and ATmegaBOOT start the application after about a second of silence. When
    the target has left the bootloader anyway (``reset``, a pressed button, a missed
    keep-alive), the next command reconnects by itself.
    """

    def __init__(self, bootloader: Bootloader, target: str = "") -> None:
        self.bootloader = bootloader
        self.target = target or bootloader.link.description
        self.lock = threading.RLock()
        self.in_bootloader = True
        self.reconnects = 0
        self.info: TargetInfo = bootloader.identify()
        #: The memory map even while an application answers (``info`` shows it).
        self.known_memory_map: MemoryMap = bootloader.memory_map()
        self._last_activity = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if Capability.KEEP_ALIVE in bootloader.capabilities:
            self._thread = threading.Thread(
                target=self._keep_alive_loop, name="flashsh-keepalive", daemon=True
            )
            self._thread.start()

    @classmethod
    def open(
        cls,
        target: str,
        options: ProbeOptions,
        report: Callable[[str], None] | None = None,
    ) -> Session:
        """Open ``target`` and find the bootloader on it. A target of 12 hex digits is a
        node UUID on the CAN bus ``options.can`` names."""
        from flashsh.transports.can import is_uuid
        from flashsh.transports.msc import is_msc_target
        from flashsh.transports.usb import is_usb_target

        if is_uuid(target):
            return cls.open_can(target.lower(), options, report)
        if is_usb_target(target) or is_usb_sim(target):
            return cls.open_usb(target, options, report)
        if is_msc_target(target):
            return cls.open_drive(target, options, report)
        first_baud = options.baudrate or 115200
        link = open_serial(target, first_baud, reset_lines=options.reset)
        try:
            bootloader = detect(link, options, report)
            return cls(bootloader, target)
        except BaseException:
            link.close()
            raise

    @classmethod
    def open_can(
        cls, uuid: str, options: ProbeOptions, report: Callable[[str], None] | None = None
    ) -> Session:
        from flashsh.protocols.katapult_entry import open_can_node
        from flashsh.transports.can import CanBus

        bus = CanBus(options.can)
        if report:
            report(f"looking for node {uuid} on {bus.description}")
        try:
            return cls(open_can_node(bus, uuid, options.chip), uuid)
        except BaseException:
            bus.close()
            raise

    @classmethod
    def open_usb(
        cls, target: str, options: ProbeOptions, report: Callable[[str], None] | None = None
    ) -> Session:
        """A ``usb:...`` target, or a ``sim://`` URL of a simulated USB device, which is
        plugged into a bus of its own."""
        from flashsh.protocols import usb_session_for
        from flashsh.transports.usb import open_usb

        if is_usb_sim(target):
            from flashsh.sims.usb_bus import SimUsbBackend, SimUsbBus, make_device

            bus = SimUsbBus()
            info = bus.plug(make_device(target))
            ident = info.device.identity
            link = open_usb(
                f"usb:{ident.vid:04x}:{ident.pid:04x}",
                backend=SimUsbBackend(bus),
                description=target,
            )
        else:
            link = open_usb(target, options.usb_backend)
        if report:
            report(f"found {link.info.usb_id} ({link.info.what}) at {link.info.port}")
        try:
            return cls(usb_session_for(link, chip=options.chip), target)
        except BaseException:
            link.close()
            raise

    @classmethod
    def open_drive(
        cls, target: str, options: ProbeOptions, report: Callable[[str], None] | None = None
    ) -> Session:
        """A bootloader drive (UF2, STM32 MSC): ``msc``, ``msc:LABEL``, ``msc:PATH``, or a
        mount point holding INFO_UF2.TXT."""
        from flashsh.protocols.msc_drive import MscDrive

        drive = MscDrive.open_drive(target, options.chip)
        if report:
            report(f"found {drive.identify().bootloader} ({drive.identify().how})")
        try:
            return cls(drive, target)
        except BaseException:
            drive.close()
            raise

    @property
    def memory_map(self) -> MemoryMap:
        """The memory map; raises with advice when no bootloader is answering."""
        self.bootloader.ready()
        return self.known_memory_map

    def request_bootloader(self) -> bool:
        """Ask the running application to reboot into its bootloader and connect to
        that. False when the bootloader is already answering."""
        with self.lock:
            try:
                self.bootloader.ready()
                if self.in_bootloader:
                    return False
            except FlashshError:
                pass
            self.bootloader = self.bootloader.request_bootloader()
            self.in_bootloader = True
            self.info = self.bootloader.identify()
            self.known_memory_map = self.bootloader.memory_map()
            return True

    @property
    def capabilities(self) -> Capability:
        return self.bootloader.capabilities

    @contextmanager
    def use(self) -> Iterator[Bootloader]:
        """Hold the link for one command, bringing the bootloader back first if it left."""
        with self.lock:
            if not self.in_bootloader:
                self.bootloader.reconnect()
                self.in_bootloader = True
                self.reconnects += 1
                self.info = self.bootloader.identify()
            self.bootloader.ready()
            try:
                yield self.bootloader
            except FlashshError:
                # A failed exchange may leave the target out of step: resync next time.
                self.in_bootloader = self._still_answers()
                raise
            finally:
                self._last_activity = time.monotonic()

    def start_application(self) -> None:
        with self.lock:
            if self.in_bootloader:
                self.bootloader.start_application()
            self.in_bootloader = False
            successor = self.bootloader.follow_after_start()
            if successor is not None:
                self._continue_on(successor)

    def _continue_on(self, successor: Bootloader) -> None:
        """The board came back as ``successor`` (re-enumerated under a new address)."""
        self.bootloader = successor
        self.info = successor.identify()
        # An application answers too: memory commands then refuse with ready()'s
        # advice, and `bootloader` gets back in.
        self.in_bootloader = True
        try:
            successor.ready()
        except FlashshError:
            return
        self.known_memory_map = successor.memory_map()

    def _still_answers(self) -> bool:
        try:
            self.bootloader.keep_alive()
        except FlashshError:
            return False
        return True

    def _keep_alive_loop(self) -> None:
        while not self._stop.wait(KEEP_ALIVE_PERIOD / 2):
            if time.monotonic() - self._last_activity < KEEP_ALIVE_PERIOD:
                continue
            if not self.lock.acquire(blocking=False):
                continue  # a command is running: it keeps the bootloader awake itself
            try:
                if self.in_bootloader and not self._stop.is_set():
                    self.in_bootloader = self._still_answers()
                self._last_activity = time.monotonic()
            finally:
                self.lock.release()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        with self.lock:
            self.bootloader.close()


def is_usb_sim(target: str) -> bool:
    """A ``sim://NAME`` target whose simulator is a USB device."""
    if not target.startswith("sim://"):
        return False
    from flashsh.sims import USB_SIMS
    from flashsh.sims.url import parse_sim_url

    try:
        return parse_sim_url(target)[0] in USB_SIMS
    except ValueError:
        return False


class EarlyOpen:
    """Opens a session in a thread while the rest of the program loads.

    Importing the shell takes about as long as resetting a board and waiting for its
    bootloader; doing both at once makes ``flashsh TARGET`` start that much sooner.
    """

    def __init__(self, target: str, probe: ProbeOptions, verbose: bool) -> None:
        self.target = target
        self.probe = probe
        self._session: Session | None = None
        self._error: BaseException | None = None
        report = (lambda text: print(text, file=sys.stderr)) if verbose else None
        self._thread = threading.Thread(
            target=self._run, args=(report,), name="flashsh-open", daemon=True
        )
        self._thread.start()

    def _run(self, report: Any) -> None:
        try:
            self._session = Session.open(self.target, self.probe, report)
        except BaseException as exc:  # handed to the main thread by result()
            self._error = exc

    def result(self) -> Session:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._session is not None
        return self._session

    def discard(self) -> None:
        self._thread.join()
        if self._session is not None:
            self._session.close()
