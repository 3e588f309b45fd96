"""A python-can virtual bus talking raw frames to a simulated CAN bus, for tests."""

from __future__ import annotations

import time

import can

from flashsh.sims.can_bus import SimCanHandle, start_sim_can

# Frames from the Katapult fact sheet (katapult.md 2.1-2.9), byte for byte.
CONNECT = "01 88 11 00 f1 7c 99 03"
SEND_EOF = "01 88 13 00 41 4f 99 03"
COMPLETE = "01 88 15 00 91 1b 99 03"
GET_CANBUS_ID = "01 88 16 00 f9 31 99 03"
NACK = "01 88 f1 00 68 95 99 03"
COMMAND_ERROR = "01 88 f2 00 00 bf 99 03"
BUSY = "01 88 f3 00 d8 a6 99 03"
PRIME = "01 88 90 00 e5 e9 99 03"
CONNECT_REPLY = (
    "01 88 a0 0a 11 00 00 00 00 01 01 00 00 20 00 08 40 00 00 00 "
    "73 74 6d 33 32 66 31 30 33 78 65 00 00 00 00 00 76 30 2e 30 2e 31 00 00 "
    "fa 0b 99 03"
)
BLOCK_ACK_2000 = "01 88 a0 02 12 00 00 00 00 20 00 08 5a d6 99 03"
EOF_16_PAGES = "01 88 a0 02 13 00 00 00 10 00 00 00 37 1b 99 03"
REQUEST_2000 = "01 88 14 01 00 20 00 08 5b de 99 03"
COMPLETE_ACK = "01 88 a0 01 15 00 00 00 00 2e 99 03"
CANBUS_ID_REPLY = "01 88 a0 03 16 00 00 00 aa bb cc dd ee ff 00 00 fd 7d 99 03"


def h(text: str) -> bytes:
    return bytes.fromhex(text)


class Host:
    """The host end: sends standard frames, collects what comes back."""

    def __init__(self, handle: SimCanHandle) -> None:
        self.handle = handle
        self.bus = can.Bus(interface=handle.interface, channel=handle.channel)

    def frame(self, can_id: int, data: bytes | str) -> None:
        payload = h(data) if isinstance(data, str) else data
        self.bus.send(can.Message(arbitration_id=can_id, data=payload, is_extended_id=False))

    def stream(self, can_id: int, data: bytes | str) -> None:
        """Send a byte stream cut into 8-byte frames."""
        payload = h(data) if isinstance(data, str) else data
        for i in range(0, len(payload), 8):
            self.frame(can_id, payload[i : i + 8])

    def frames(self, quiet: float = 0.15, first: float = 1.0) -> list[tuple[int, bytes]]:
        """Frames until ``quiet`` seconds pass with none (waiting ``first`` for one)."""
        out: list[tuple[int, bytes]] = []
        wait = first
        while (msg := self.bus.recv(wait)) is not None:
            out.append((msg.arbitration_id, bytes(msg.data)))
            wait = quiet
        return out

    def reply(self, can_id: int = 0x203, **kw: float) -> str:
        """The bytes that came on ``can_id``, as spaced hex."""
        return b"".join(d for i, d in self.frames(**kw) if i == can_id).hex(" ")

    def command(self, frame: str, can_id: int = 0x202, **kw: float) -> str:
        self.stream(can_id, frame)
        return self.reply(can_id + 1, **kw)

    def assign(self, uuid: str = "aabbccddeeff", nodeid: int = 0x81) -> None:
        self.frame(0x3F0, f"11 {uuid} {nodeid:02x}")
        time.sleep(0.02)

    def query(self, **kw: float) -> list[str]:
        self.frame(0x3F0, "00")
        return [d.hex(" ") for i, d in self.frames(**kw) if i == 0x3F1]

    def close(self) -> None:
        self.bus.shutdown()


def open_bus(query: str) -> tuple[SimCanHandle, Host]:
    """``sim://can?query`` with throttle 0 and no double-reset wait unless given."""
    if "throttle=" not in query:
        query += "&throttle=0"
    if "double_reset_ms=" not in query:
        query += "&double_reset_ms=0"
    handle = start_sim_can("sim://can?" + query)
    return handle, Host(handle)


def wait_for(predicate, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()
