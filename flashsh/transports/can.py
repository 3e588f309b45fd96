"""A CAN bus through python-can, the admin messages Klipper and Katapult share, and one
node's data stream as a ByteLink.

Admin frames go to every node on 0x3F0 and come back on 0x3F1: a query (``00``)
draws ``20 uuid[6] app`` from every node without a node id, ``11 uuid id`` gives a
Katapult node its id, ``12`` takes the ids of all Katapult nodes away, and
``02 uuid`` asks a node running Klipper to reboot into its bootloader. A node with id
N reads a byte stream on 0x100 + 2N and answers on the next id; frame boundaries carry
no meaning (facts: docs/can.md, Arksine/katapult src/generic/canserial.c).
"""

from __future__ import annotations

import errno
import re
import time
from dataclasses import dataclass
from typing import Any

from flashsh.errors import FlashshError, TransportError
from flashsh.transports.base import ByteLink

ADMIN_TO_NODES = 0x3F0
ADMIN_FROM_NODES = 0x3F1
QUERY_UNASSIGNED = 0x00
REQUEST_BOOTLOADER = 0x02
SET_KATAPULT_NODEID = 0x11
CLEAR_KATAPULT_NODEIDS = 0x12
RESP_NEED_NODEID = 0x20
#: The id flashtool gives the node it talks to; flashsh does the same, so the two never
#: collide on a bus they share in turn.
NODE_ID = 0x81
APPLICATIONS = {0x01: "Klipper", 0x11: "Katapult"}

DEFAULT_INTERFACE = "socketcan"
DEFAULT_CHANNEL = "can0"
DEFAULT_BITRATE = 1_000_000
#: How long after ``12`` before the query: the nodes drop their ids in a task of their
#: own (flashtool waits 0.5 s).
CLEAR_SETTLE = 0.1
QUERY_WINDOW = 2.0

UUID_PATTERN = re.compile(r"[0-9a-fA-F]{12}")


def is_uuid(text: str) -> bool:
    return bool(UUID_PATTERN.fullmatch(text))


def data_ids(node_id: int) -> tuple[int, int]:
    """(host to node, node to host) CAN ids of a node id: 0x100 + 2N and the next."""
    return 0x100 + 2 * node_id, 0x101 + 2 * node_id


@dataclass
class CanOptions:
    """Which bus: python-can's interface, channel and bitrate. Unset ones come from
    python-can's configuration (~/.canrc, CAN_INTERFACE, ...), else socketcan can0 at
    1 Mbit/s as Klipper and Katapult use."""

    interface: str | None = None
    channel: str | None = None
    bitrate: int | None = None


@dataclass(frozen=True)
class FoundNode:
    uuid: str
    application: str


def resolve(options: CanOptions) -> dict[str, Any]:
    import can

    given = {
        key: value
        for key, value in (
            ("interface", options.interface),
            ("channel", options.channel),
            ("bitrate", options.bitrate),
        )
        if value is not None
    }
    if str(given.get("channel", "")).startswith("sim://"):
        given.setdefault("interface", "sim")
    try:
        config = dict(can.util.load_config(config=dict(given)))
    except can.CanInterfaceNotImplementedError:
        config = dict(given)
        config.setdefault("interface", DEFAULT_INTERFACE)
    config.setdefault("interface", DEFAULT_INTERFACE)
    if config.get("channel") is None:
        config["channel"] = DEFAULT_CHANNEL
    if config.get("bitrate") is None:
        config["bitrate"] = DEFAULT_BITRATE
    return config


class CanBus:
    """One open python-can bus; ``sim://can?...`` channels start the built-in nodes."""

    def __init__(self, options: CanOptions) -> None:
        import can

        config = resolve(options)
        self.interface = str(config.pop("interface"))
        self.channel = str(config["channel"])
        self.bitrate = int(config["bitrate"])
        self.sim: Any = None
        if self.channel.startswith("sim://"):
            self.sim = simulated_bus(self.channel)
            config["channel"] = self.sim.channel
            self.interface = "virtual"
        if self.interface == "slcan":
            config.setdefault("sleep_after_open", 0)
        shown = self.channel.split("?")[0] if self.sim else self.channel
        self.description = f"{shown} ({self.interface}, {self.bitrate} bit/s)"
        try:
            self.bus = can.Bus(interface=self.interface, **config)
        except can.CanInterfaceNotImplementedError as exc:
            self._stop_sim()
            raise TransportError(
                f"python-can has no CAN interface {self.interface!r} ({exc})",
                "use socketcan (Linux can0), slcan, gs_usb, pcan, socketcand or virtual",
            ) from None
        except (can.CanError, OSError, ValueError) as exc:
            self._stop_sim()
            raise open_error(self.interface, self.channel, self.bitrate, exc) from None
        #: uuid -> node id given by this bus object (re-sent after a query clears them).
        self.assigned: dict[str, int] = {}

    # ------------------------------------------------------------------ frames

    def send(self, arbitration_id: int, data: bytes) -> None:
        import can

        message = can.Message(arbitration_id=arbitration_id, data=data, is_extended_id=False)
        try:
            self.bus.send(message, timeout=1.0)
        except (can.CanError, OSError) as exc:
            raise send_error(self.channel, self.bitrate, exc) from None

    def recv(self, timeout: float) -> Any:
        import can

        try:
            message = self.bus.recv(timeout=max(timeout, 0.0))
        except (can.CanError, OSError) as exc:
            raise TransportError(f"reading from {self.channel} failed: {exc}") from None
        if message is None or message.is_error_frame or message.is_remote_frame:
            return None
        return message

    # ------------------------------------------------------------------ admin

    def clear_katapult_ids(self) -> None:
        self.send(ADMIN_TO_NODES, bytes([CLEAR_KATAPULT_NODEIDS]))

    def assign(self, uuid: str, node_id: int = NODE_ID) -> None:
        self.send(
            ADMIN_TO_NODES, bytes([SET_KATAPULT_NODEID]) + bytes.fromhex(uuid) + bytes([node_id])
        )
        self.assigned[uuid] = node_id

    def request_bootloader(self, uuid: str) -> None:
        self.send(ADMIN_TO_NODES, bytes([REQUEST_BOOTLOADER]) + bytes.fromhex(uuid))

    def query(self, window: float = QUERY_WINDOW) -> list[FoundNode]:
        """Every node without a node id, once each, in order of answer. Katapult nodes
        lose their ids first (so nodes left assigned by an earlier run answer too); the
        ones this bus had assigned get them back afterwards."""
        self.clear_katapult_ids()
        time.sleep(CLEAR_SETTLE)
        self.send(ADMIN_TO_NODES, bytes([QUERY_UNASSIGNED]))
        found: dict[str, FoundNode] = {}
        deadline = time.monotonic() + window
        while (left := deadline - time.monotonic()) > 0:
            message = self.recv(left)
            if message is None or message.arbitration_id != ADMIN_FROM_NODES:
                continue
            data = bytes(message.data)
            if len(data) < 7 or data[0] != RESP_NEED_NODEID:
                continue
            uuid = data[1:7].hex()
            # A 7-byte answer comes from Klipper builds before the app byte existed.
            app = APPLICATIONS.get(data[7], "Unknown") if len(data) > 7 else "Klipper"
            found.setdefault(uuid, FoundNode(uuid, app))
        for uuid, node_id in self.assigned.items():
            if uuid not in found or found[uuid].application == "Katapult":
                self.assign(uuid, node_id)
        return list(found.values())

    def node_link(self, uuid: str, node_id: int = NODE_ID) -> CanNodeLink:
        return CanNodeLink(self, uuid, node_id)

    def _stop_sim(self) -> None:
        self.sim = None  # the simulated nodes live on for the next bus on that URL

    def close(self) -> None:
        try:
            self.bus.shutdown()
        finally:
            self._stop_sim()


#: Simulated buses by URL, one per process: a `query` and the `connect` after it must
#: meet the same nodes, as on a real bus.
_SIMULATED: dict[str, Any] = {}


def simulated_bus(url: str) -> Any:
    """The running simulator for ``sim://can?...`` (started on first use)."""
    if url not in _SIMULATED:
        import atexit

        from flashsh.sims.can_bus import start_sim_can

        try:
            _SIMULATED[url] = handle = start_sim_can(url)
        except ValueError as exc:
            raise FlashshError(str(exc), "see docs/simulator.md for sim://can options") from None
        atexit.register(handle.stop)
    return _SIMULATED[url]


class CanNodeLink(ByteLink):
    """The byte stream to one node id, cut into 8-byte frames and put back together."""

    def __init__(self, bus: CanBus, uuid: str, node_id: int) -> None:
        self.bus = bus
        self.uuid = uuid
        self.tx_id, self.rx_id = data_ids(node_id)
        self.description = f"{bus.description.split(' (')[0]} node {uuid}"
        self._pending = bytearray()

    def write(self, data: bytes) -> None:
        for at in range(0, len(data), 8):
            self.bus.send(self.tx_id, data[at : at + 8])

    def read(self, size: int, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self._pending) < size:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            message = self.bus.recv(left)
            if message is not None and message.arbitration_id == self.rx_id:
                self._pending += bytes(message.data)
        out = bytes(self._pending[:size])
        del self._pending[:size]
        return self.remember(out)

    def discard_input(self) -> None:
        self._pending.clear()
        while self.bus.recv(0) is not None:
            pass

    @property
    def baudrate(self) -> int:
        return self.bus.bitrate

    @baudrate.setter
    def baudrate(self, value: int) -> None:
        raise TransportError("a CAN node's bitrate is the bus's", "use --bitrate")

    def set_lines(self, *, dtr: bool | None = None, rts: bool | None = None) -> bool:
        return False

    def close(self) -> None:
        self.bus.close()


def _errno(exc: BaseException) -> int | None:
    for candidate in (exc, exc.__cause__, exc.__context__):
        if candidate is None:
            continue
        code = getattr(candidate, "error_code", None) or getattr(candidate, "errno", None)
        if isinstance(code, int):
            return code
    match = re.search(r"\[Errno (\d+)\]", str(exc))
    return int(match[1]) if match else None


def up_command(channel: str, bitrate: int) -> str:
    return f"sudo ip link set {channel} up type can bitrate {bitrate}"


def open_error(interface: str, channel: str, bitrate: int, exc: BaseException) -> TransportError:
    code = _errno(exc)
    text = str(exc)
    if code == errno.ENODEV or "No such device" in text:
        return TransportError(
            f"there is no CAN interface {channel} on this machine",
            "plug the adapter in and check `ip link show`; an adapter without a kernel "
            "driver needs --can-interface gs_usb or slcan",
        )
    if code == errno.EAFNOSUPPORT:
        return TransportError(
            "this machine's kernel has no SocketCAN support loaded",
            "sudo modprobe can_raw, or use a USB adapter with --can-interface slcan or gs_usb",
        )
    if code in (errno.EACCES, errno.EPERM) or "Permission denied" in text:
        return TransportError(
            f"permission denied opening {channel}",
            "for a serial adapter add yourself to the dialout group and log in again",
        )
    if code == errno.ENOENT or "No such file" in text or "could not open port" in text:
        return TransportError(
            f"cannot open {channel} for the {interface} interface: {text}",
            "check the adapter's port name (`flashsh -c ports` lists serial ports)",
        )
    return TransportError(
        f"cannot open CAN {interface} {channel}: {text}",
        f"for socketcan bring it up first: {up_command(channel, bitrate)}",
    )


def send_error(channel: str, bitrate: int, exc: BaseException) -> TransportError:
    code = _errno(exc)
    if code == errno.ENETDOWN or "Network is down" in str(exc):
        return TransportError(f"{channel} is down", f"bring it up: {up_command(channel, bitrate)}")
    if code == errno.ENOBUFS or "No buffer space" in str(exc):
        return TransportError(
            f"CAN frames are not leaving {channel}: no node acknowledges them (or the bus is off)",
            f"check that every node runs at {bitrate} bit/s (--bitrate; Katapult and Klipper "
            "use 1000000, older builds 500000), the wiring and both 120 ohm terminators; "
            f"`ip -details link show {channel}` shows BUS-OFF; `sudo ip link set {channel} "
            "txqueuelen 128` as Klipper's docs advise",
        )
    return TransportError(f"sending on {channel} failed: {exc}")
