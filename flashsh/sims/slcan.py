"""A CANable-style LAWICEL (slcan) adapter on a pseudo-terminal, wired to a simulated bus.

The client (python-can's ``slcan`` interface, for one) opens the pty slave and speaks the
serial-line protocol; the master side here plays the adapter:

* commands end in CR: ``C`` close the channel, ``S0``..``S9`` bit rate (10k, 20k, 50k,
  100k, 125k, 250k, 500k, 750k, 1M, 83.3k), ``O`` open, ``L`` open listen-only,
  ``tIIILDD..`` / ``TIIIIIIIILDD..`` send a frame; anything else is ignored, and each
  line is answered with CR as the adapter's "OK" (python-can ignores the answer);
* frames from the bus arrive as ``tIIILDD..\\r`` (``T`` for extended IDs), upper case.

A channel opened at another bit rate than the nodes' sees nothing and is seen by nobody:
its frames get no ACK and would be retried until the adapter gives up, and the nodes'
frames look like noise to it. The model drops both directions and says nothing, as a
CANable does (it reports no errors on the serial line).
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import threading
import tty
from collections.abc import Callable

import can

from flashsh.sims.can_bus import SimCanHandle

#: ``Sn`` code -> bit rate (LAWICEL; python-can slcan ``_BITRATES``).
BITRATES = {
    0: 10_000,
    1: 20_000,
    2: 50_000,
    3: 100_000,
    4: 125_000,
    5: 250_000,
    6: 500_000,
    7: 750_000,
    8: 1_000_000,
    9: 83_300,
}


def encode_frame(msg: can.Message) -> bytes:
    """A received frame as the adapter writes it to the host."""
    data = bytes(msg.data[: msg.dlc]).hex().upper()
    if msg.is_extended_id:
        return f"T{msg.arbitration_id:08X}{msg.dlc}{data}\r".encode()
    return f"t{msg.arbitration_id:03X}{msg.dlc}{data}\r".encode()


def decode_frame(line: str) -> can.Message | None:
    """``t``/``T`` line -> message; None if malformed."""
    extended = line[0] == "T"
    width = 8 if extended else 3
    try:
        can_id = int(line[1 : 1 + width], 16)
        dlc = int(line[1 + width], 16)
        data = bytes.fromhex(line[2 + width : 2 + width + 2 * dlc])
    except (ValueError, IndexError):
        return None
    if dlc > 8 or len(data) != dlc:
        return None
    return can.Message(arbitration_id=can_id, data=data, is_extended_id=extended)


class SlcanAdapter:
    """The adapter: a pty master on one side, the simulated bus on the other."""

    def __init__(self, handle: SimCanHandle, log: Callable[[str], None] | None = None) -> None:
        self.handle = handle
        self._log = log or (lambda _text: None)
        self.master, slave = os.openpty()
        self.path = os.ttyname(slave)
        tty.setraw(slave)
        os.close(slave)  # a client must be able to open it exclusively
        os.set_blocking(self.master, False)
        self.bus = can.Bus(interface="virtual", channel=handle.channel)
        self.bitrate: int | None = None
        self.is_open = False
        self.listen_only = False
        self.sent = 0
        self.received = 0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._from_host, name="slcan-in", daemon=True),
            threading.Thread(target=self._to_host, name="slcan-out", daemon=True),
        ]

    @property
    def on_bus(self) -> bool:
        """Open at the nodes' bit rate: frames flow both ways."""
        return self.is_open and self.bitrate == self.handle.bitrate

    def start(self) -> SlcanAdapter:
        for thread in self._threads:
            thread.start()
        return self

    def wait(self) -> None:
        """Serve until :meth:`stop`."""
        self._stop.wait()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self.stop()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(1.0)
        self.bus.shutdown()
        with contextlib.suppress(OSError):
            os.close(self.master)

    # ------------------------------------------------------------------ host -> bus

    def _from_host(self) -> None:
        pending = b""
        while not self._stop.is_set():
            readable, _, _ = select.select([self.master], [], [], 0.05)
            if not readable:
                continue
            try:
                chunk = os.read(self.master, 4096)
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
                # No client holds the slave: the master reads EIO until one opens it.
                self._stop.wait(0.02)
                continue
            pending += chunk
            while b"\r" in pending:
                line, pending = pending.split(b"\r", 1)
                self._command(line.decode("ascii", "replace").strip())

    def _command(self, line: str) -> None:
        if not line:
            return
        head = line[0]
        if head == "C":
            self.is_open = False
            self._log("slcan: channel closed")
        elif head == "S" and line[1:].isdigit() and int(line[1:]) in BITRATES:
            self.bitrate = BITRATES[int(line[1:])]
            self._log(f"slcan: bit rate {self.bitrate}")
        elif head in "OL":
            self.is_open, self.listen_only = True, head == "L"
            if self.bitrate != self.handle.bitrate:
                self._log(
                    f"slcan: open at {self.bitrate} bit/s, bus runs {self.handle.bitrate}: "
                    "nothing gets through"
                )
        elif head in "tT":
            msg = decode_frame(line)
            if msg is not None and self.on_bus and not self.listen_only:
                self.sent += 1
                self.bus.send(msg)
        self._write(b"\r")

    # ------------------------------------------------------------------ bus -> host

    def _to_host(self) -> None:
        while not self._stop.is_set():
            msg = self.bus.recv(0.05)
            if msg is None or not self.on_bus:
                continue
            self.received += 1
            self._write(encode_frame(msg))

    def _write(self, data: bytes) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            # A client that does not read loses frames, as an adapter's buffer overflows.
            os.write(self.master, data)
