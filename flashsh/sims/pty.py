"""Serve a simulator on a pseudo-terminal, so any serial program (avrdude) can use it.

A pty has no modem lines: a client cannot pulse DTR. What it does have is a visible
open, and the server treats "a client opened the port" as the reset an Arduino gets from
DTR when its port is opened (closing does nothing to the board). Two ways to see it,
both checked on Linux:

* inotify on the slave device (``/dev/pts/N``) reports IN_OPEN and IN_CLOSE_* for every
  open and close by any process. Counting them tells exactly when the first client
  arrives, even when a client closes and reopens within microseconds. Used when the
  C library has inotify.
* otherwise ``poll()`` on the master: it reports POLLHUP while no process has the slave
  open and stops once one does. The server keeps no slave descriptor of its own after
  start-up. This misses a close and reopen quicker than its 5 ms poll.

The client's baud rate is read from the pty's termios (the master sees the slave's
settings), so a client at the wrong rate gets garbage, as on a real board; the bytes
themselves move at the simulator's pace (its throttle), not the pty's.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import select
import struct
import termios
import threading
import tty
from collections.abc import Callable

from flashsh.sims.port import SerialSim

_RATES = (
    300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800,
    500000, 576000, 921600, 1000000, 1152000, 1500000, 2000000,
)  # fmt: skip
#: termios speed constant -> bits per second.
SPEEDS = {getattr(termios, f"B{r}"): r for r in _RATES if hasattr(termios, f"B{r}")}

# <asm-generic/ioctls.h>: a rate with no Bnnn constant (250000) reads as BOTHER, and
# TCGETS2 returns struct termios2 with the real rate in c_ospeed (offset 40 of 44 bytes).
BOTHER = getattr(termios, "BOTHER", 0o010000)
TCGETS2 = 0x802C542A
_TERMIOS2 = struct.Struct("4I B 19s 2I")


def custom_speed(fd: int) -> int | None:
    """The output rate of a tty set with BOTHER, or None where that cannot be read."""
    try:
        raw = fcntl.ioctl(fd, TCGETS2, bytes(_TERMIOS2.size))
    except OSError:
        return None
    return _TERMIOS2.unpack(raw)[-1] or None


# How often the open/close edge is looked at while no client has the port.
IDLE_POLL = 0.005
# Longest wait for client input before looking at the pty's state again.
BUSY_POLL = 0.05


# <sys/inotify.h>
IN_CLOSE_WRITE = 0x08
IN_CLOSE_NOWRITE = 0x10
IN_OPEN = 0x20
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name


class OpenWatch:
    """Opens and closes of one file, from Linux inotify through the C library."""

    def __init__(self, path: str) -> None:
        """Raises OSError when inotify is not available."""
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            init, add = libc.inotify_init1, libc.inotify_add_watch
        except (OSError, AttributeError) as exc:
            raise OSError(errno.ENOSYS, "no inotify") from exc
        fd = init(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        mask = IN_OPEN | IN_CLOSE_WRITE | IN_CLOSE_NOWRITE
        if add(fd, os.fsencode(path), mask) < 0:
            code = ctypes.get_errno()
            os.close(fd)
            raise OSError(code, f"cannot watch {path}")
        self.fd = fd
        #: Descriptors other processes hold on the file now.
        self.holders = 0

    def events(self) -> list[int]:
        """Pending events as +1 (an open) and -1 (a close), oldest first."""
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return []
        out = []
        offset = 0
        while offset < len(data):
            _wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
            offset += _EVENT.size + length
            if mask & IN_OPEN:
                out.append(1)
            if mask & (IN_CLOSE_WRITE | IN_CLOSE_NOWRITE):
                out.append(-1)
        return out

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class PtyServer:
    """Connects ``sim`` to a new pty; ``path`` is the slave to hand to clients."""

    def __init__(
        self,
        sim: SerialSim,
        *,
        reset_on_open: bool = True,
        use_inotify: bool = True,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.sim = sim
        self.reset_on_open = reset_on_open
        self._log = log or (lambda _text: None)
        self.master, slave = os.openpty()
        self.path = os.ttyname(slave)
        # Raw until a client sets its own modes; then close our end so POLLHUP tells
        # whether anybody else has it open.
        tty.setraw(slave)
        try:
            self.watch: OpenWatch | None = OpenWatch(self.path) if use_inotify else None
        except OSError:
            self.watch = None
        os.close(slave)
        if self.watch is not None:
            self.watch.events()  # our own open and close of the slave
        os.set_blocking(self.master, False)
        self.client = False
        self.opens = 0
        self._stop = threading.Event()
        self._baud: int | None = None
        self._writer = threading.Thread(target=self._pump_to_client, name="pty-writer")
        self._writer.daemon = True

    # ------------------------------------------------------------------ main loop

    def serve(self) -> None:
        """Run until :meth:`stop` (call it from a signal handler or another thread)."""
        self.sim.start()
        self._writer.start()
        if self.watch is not None:
            self._serve_watched(self.watch)
        else:
            self._serve_polled()

    def _serve_watched(self, watch: OpenWatch) -> None:
        while not self._stop.is_set():
            fds = [watch.fd] + ([self.master] if self.client else [])
            try:
                readable, _, _ = select.select(fds, [], [], BUSY_POLL)
                changes = watch.events()
            except (OSError, ValueError):
                if self._stop.is_set():
                    return  # stop() closed the descriptors under this loop
                raise
            # Opens first: a client's bytes must reach the board after its reset.
            for change in changes:
                watch.holders = max(watch.holders + change, 0)
                if (watch.holders > 0) != self.client:
                    self._edge(watch.holders > 0)
            if self.master in readable:
                self._follow_baud()
                self._pump_to_sim()

    def _serve_polled(self) -> None:
        poller = select.poll()
        poller.register(self.master, select.POLLIN)
        while not self._stop.is_set():
            events = dict(poller.poll(0 if not self.client else BUSY_POLL * 1000))
            flags = events.get(self.master, 0)
            connected = not flags & select.POLLHUP
            if connected != self.client:
                self._edge(connected)
            if not connected:
                self._stop.wait(IDLE_POLL)
                continue
            self._follow_baud()
            if flags & select.POLLIN:
                self._pump_to_sim()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        """Stop serving, stop the simulator and release the pty."""
        self.stop()
        self.sim.stop()
        if self._writer.is_alive():
            self._writer.join(1.0)
        with contextlib.suppress(OSError):
            os.close(self.master)
        if self.watch is not None:
            self.watch.close()

    # ------------------------------------------------------------------ edges

    def _edge(self, connected: bool) -> None:
        self.client = connected
        if connected:
            self.opens += 1
            # Whatever the board said while nobody listened must not greet the client.
            with contextlib.suppress(termios.error):
                termios.tcflush(self.master, termios.TCOFLUSH)
            self._follow_baud()
            self._log("client opened the port" + (": reset" if self.reset_on_open else ""))
            if self.reset_on_open:
                self.sim.reset()
        else:
            self._log("client closed the port")
        # A pty carries no modem lines: model DTR up while a client holds the port and
        # down when it closes (HUPCL), for firmware that watches it over USB-CDC.
        set_lines = getattr(self.sim, "set_host_lines", None)
        if set_lines is not None:
            if not connected:
                self._follow_baud()
            set_lines(connected, connected)

    def _follow_baud(self) -> None:
        try:
            speed = termios.tcgetattr(self.master)[5]
        except termios.error:
            return
        baud = custom_speed(self.master) if speed == BOTHER else SPEEDS.get(speed)
        if baud and baud != self._baud:
            self._baud = baud
            self.sim.set_host_baud(baud)

    # ------------------------------------------------------------------ data

    def _pump_to_sim(self) -> None:
        try:
            data = os.read(self.master, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno == errno.EIO:  # the client went away with bytes unread
                return
            raise
        if data:
            self.sim.to_target.send(data)

    def _pump_to_client(self) -> None:
        wire = self.sim.to_host
        while not self._stop.is_set():
            data = wire.read(1, BUSY_POLL)
            if not data:
                continue
            data += wire.read(4096, 0)
            if self.client:
                self._write(data)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self._stop.is_set():
            try:
                view = view[os.write(self.master, view) :]
            except BlockingIOError:
                # The client is not reading: wait briefly, then drop the rest, as a
                # real UART's bytes are lost when nobody takes them.
                if not select.select([], [self.master], [], 0.1)[1]:
                    return
            except OSError:
                return
