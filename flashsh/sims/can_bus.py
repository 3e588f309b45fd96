"""Simulated Katapult and Klipper nodes on a python-can ``virtual`` bus.

    handle = start_sim_can("sim://can?node=katapult:aabbccddeeff&node=klipper:112233445566")
    bus = can.Bus(interface=handle.interface, channel=handle.channel)
    # frames to and from the nodes on bus
    handle.stop()

Options (``sim://can?...``; the same names in ``python -m flashsh.sims can``):

``node=KIND:UUID[,NAME=VALUE...]``  one node, repeatable. KIND ``katapult``: sitting in
    Katapult (no application unless ``image``); ``klipper``: running Klipper with Katapult
    underneath. Per-node options after commas override the bus-wide ones below, e.g.
    ``node=katapult:aabbccddeeff,mcu=stm32g0b1xx,fault=drop:3,fault=crc:1``.
``bitrate`` (default 1000000), ``throttle`` (1 = real time, 0 = no delays), ``channel``
    (virtual bus channel name; default a fresh unique one), and node defaults: ``mcu``,
    ``app_start``, ``flash_kib``, ``version``, ``protocol`` (1.1.0 or 1.0.0), ``stall``
    (0/1), ``app`` (klipper or silent), ``image``, ``double_reset_ms``, ``fault`` (see
    :mod:`flashsh.sims.katapult_faults`; a bus-wide fault applies to every node).

Timing: a virtual bus delivers at once, so the simulator keeps one bus clock. Every frame,
the host's and the nodes', takes :func:`frame_time` on the wire, one after another; a
host frame reaches the nodes when it would have finished, and nodes send their pieces
one slot at a time. Arbitration is first come, first served (a real bus lets the lower ID
win a tie, which changes the order of frames but not the throughput).
"""

from __future__ import annotations

import threading
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field

import can

from flashsh.sims.board import number_option
from flashsh.sims.can_node import ADMIN_ID, QUERY_UNASSIGNED, CanNode
from flashsh.sims.katapult_faults import NodeFaults
from flashsh.sims.katapult_node import NodeConfig
from flashsh.sims.scheduler import Scheduler
from flashsh.sims.url import parse_sim_url

DEFAULT_BITRATE = 1_000_000
KINDS = ("katapult", "klipper")

NODE_OPTIONS = {
    "mcu": "stm32f103xe (default), stm32g0b1xx, stm32f446xx",
    "app_start": "application start address (default: the family's first Kconfig choice)",
    "flash_kib": "flash size in KiB (default per mcu: 64, 512, 512)",
    "version": "software version string in the CONNECT reply (default v0.0.1)",
    "protocol": "1.1.0 (default) or 1.0.0 (CONNECT without version)",
    "stall": "1: the parser never discards a bad buffer starting with 0x01 (as the source)",
    "app": "klipper (default) or silent: what runs when the application runs",
    "image": "file in flash before the start (.bin at app start, .hex, .elf)",
    "double_reset_ms": "wait before a valid application starts after a reset (default 500)",
    "fault": "drop:N dup:N respdrop:N respdup:N crc:N nack:N busy:N reboot:N silent "
    "baduuid collide (repeatable)",
}
OPTIONS = {
    "node": "KIND:UUID[,NAME=VALUE...], KIND katapult or klipper (repeatable, required)",
    "bitrate": "bus bit rate (default 1000000)",
    "throttle": "1 = real time (default), 0 = no delays",
    "channel": "python-can virtual channel name (default: a unique one)",
    **NODE_OPTIONS,
}


def frame_time(dlc: int, bitrate: int) -> float:
    """Seconds a classic standard data frame with ``dlc`` bytes occupies the bus.

    47 fixed bits (SOF, 11-bit ID, RTR, IDE, r0, DLC, 15-bit CRC, CRC and ACK delimiters,
    ACK slot, 7-bit EOF, 3-bit intermission) plus 8 per data byte, plus the worst-case
    stuff bits: one per 4 bits after the first over the 34 + 8*dlc stuffed bits (SOF
    through CRC). 8 bytes at 1 Mbit/s: 111 + 24 = 135 us.
    """
    stuffed = 34 + 8 * dlc
    return (47 + 8 * dlc + (stuffed - 1) // 4) / bitrate


def bus_limit(payload: int, bitrate: int) -> float:
    """Fastest time for ``payload`` bytes cut into 8-byte frames (for benchmarks)."""
    full, rest = divmod(payload, 8)
    return full * frame_time(8, bitrate) + (frame_time(rest, bitrate) if rest else 0.0)


class SimBus:
    """The wire: one clock, one python-can virtual bus handle, the nodes on it."""

    def __init__(self, channel: str, bitrate: int, throttle: float) -> None:
        self.channel = channel
        self.bitrate = bitrate
        self.throttle = throttle
        self.clock = Scheduler(name=f"sim-can-{channel}")
        self.bus = can.Bus(interface="virtual", channel=channel, receive_own_messages=False)
        self.nodes: list[CanNode] = []
        self.frames = 0  # frames that went over the wire, both directions
        self._free_at = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._receiver = threading.Thread(target=self._receive, name="sim-can-rx", daemon=True)

    def start(self) -> SimBus:
        self.clock.start()
        self._receiver.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._receiver.join(1.0)
        self.clock.stop()
        self.bus.shutdown()

    def _slot(self, dlc: int) -> float:
        """Reserve the bus for one frame from now on; return when it has finished."""
        with self._lock:
            start = max(self.clock.now(), self._free_at)
            self._free_at = start + frame_time(dlc, self.bitrate) * self.throttle
            self.frames += 1
            return self._free_at

    # ------------------------------------------------------------------ host -> nodes

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.bus.recv(0.05)
            except can.CanError:
                continue
            if msg is None or msg.is_error_frame or msg.is_remote_frame:
                continue
            if msg.is_extended_id or msg.is_fd:
                continue  # the nodes' controllers filter standard IDs, classic frames
            data = bytes(msg.data[: msg.dlc])
            can_id = msg.arbitration_id
            end = self._slot(len(data))
            self.clock.at(end, lambda i=can_id, d=data: self._deliver(i, d, None))

    def _deliver(self, can_id: int, data: bytes, sender: CanNode | None) -> None:
        if can_id == ADMIN_ID and data[:1] == bytes([QUERY_UNASSIGNED]):
            answering = [n for n in self.nodes if n.answers_query()]
            if len(answering) > 1:
                for node in answering:
                    if node.faults.has("collide"):
                        node.go_bus_off()
        for node in self.nodes:
            if node is not sender:
                node.on_frame(can_id, data, from_host=sender is None)

    # ------------------------------------------------------------------ nodes -> all

    def transmit(
        self, sender: CanNode, can_id: int, data: bytes, still: Callable[[], bool]
    ) -> None:
        """Put a node's frame on the wire in the next free slot; ``still()`` is asked
        then whether the node has not been reset meanwhile."""

        def on_air() -> None:
            if not still():
                return
            msg = can.Message(arbitration_id=can_id, data=data, is_extended_id=False)
            self.bus.send(msg)
            self._deliver(can_id, data, sender)

        self.clock.at(self._slot(len(data)), on_air)


@dataclass
class SimCanHandle:
    """A running simulated bus: open ``can.Bus(interface=..., channel=...)`` on it."""

    sim: SimBus
    nodes: list[CanNode] = field(default_factory=list)
    interface: str = "virtual"

    @property
    def channel(self) -> str:
        return self.sim.channel

    @property
    def bitrate(self) -> int:
        return self.sim.bitrate

    def node(self, uuid: str) -> CanNode:
        """The first node with ``uuid``. Raises KeyError."""
        for node in self.nodes:
            if node.uuid == uuid.lower():
                return node
        raise KeyError(uuid)

    def stop(self) -> None:
        self.sim.stop()

    def __enter__(self) -> SimCanHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------- options


def _flag(name: str, text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "yes", "true", "on"):
        return True
    if value in ("0", "no", "false", "off", ""):
        return False
    raise ValueError(f"option {name}={text!r}: 0 or 1")


def _address(name: str, text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise ValueError(f"option {name}={text!r} needs an address, like 0x08002000") from None


def node_config(one: dict[str, str], throttle: float, installed: bool) -> NodeConfig:
    """A NodeConfig from node options (faults apart). Raises ValueError."""
    kwargs: dict = {"throttle": throttle, "installed": installed}
    for name in ("mcu", "version", "protocol", "app"):
        if name in one:
            kwargs[name] = one[name] if name == "version" else one[name].lower()
    if "image" in one:
        kwargs["image"] = one["image"]
    if "app_start" in one:
        kwargs["app_start"] = _address("app_start", one["app_start"])
    if "flash_kib" in one:
        kwargs["flash_kib"] = int(number_option("flash_kib", one["flash_kib"]))
    if "double_reset_ms" in one:
        kwargs["double_reset_ms"] = number_option("double_reset_ms", one["double_reset_ms"])
    if "stall" in one:
        kwargs["stall"] = _flag("stall", one["stall"])
    config = NodeConfig(**kwargs)
    config.validate()
    return config


@dataclass
class NodeSpec:
    kind: str
    uuid: str
    options: dict[str, list[str]]


def parse_node(text: str) -> NodeSpec:
    """``KIND:UUID[,NAME=VALUE...]``. Raises ValueError."""
    head, *rest = text.split(",")
    kind, sep, uuid = head.partition(":")
    kind = kind.strip().lower()
    if not sep or kind not in KINDS:
        raise ValueError(f"node={text!r}: expected KIND:UUID with KIND katapult or klipper")
    uuid = uuid.strip().lower()
    if len(uuid) != 12 or any(c not in "0123456789abcdef" for c in uuid):
        raise ValueError(f"node={text!r}: the UUID is 12 hex digits, like aabbccddeeff")
    options: dict[str, list[str]] = {}
    for item in rest:
        name, eq, value = item.partition("=")
        name = name.strip().lower()
        if not eq:
            # "fault=drop:3,crc:1" style: a bare item continues the previous fault list.
            if options.get("fault") and name:
                options["fault"].append(item.strip())
                continue
            raise ValueError(f"node={text!r}: expected NAME=VALUE after the UUID, got {item!r}")
        if name not in NODE_OPTIONS:
            raise ValueError(
                f"unknown node option {name!r} in node={text!r}; valid: {', '.join(NODE_OPTIONS)}"
            )
        options.setdefault(name, []).append(value)
    return NodeSpec(kind, uuid, options)


def start_sim_can_options(options: dict[str, list[str]]) -> SimCanHandle:
    """Start a bus from parsed options (URL query or command line). Raises ValueError."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        valid = ", ".join(OPTIONS)
        raise ValueError(f"unknown option {unknown[0]!r} for sim://can; valid: {valid}")
    specs = [parse_node(text) for text in options.get("node", [])]
    if not specs:
        raise ValueError("sim://can needs at least one node=KIND:UUID")
    one = {name: values[-1] for name, values in options.items()}
    bitrate = int(number_option("bitrate", one.get("bitrate", str(DEFAULT_BITRATE))))
    if bitrate <= 0:
        raise ValueError("option bitrate must be positive")
    throttle = number_option("throttle", one.get("throttle", "1"))
    channel = one.get("channel") or f"flashsh-sim-can-{uuidlib.uuid4().hex[:12]}"
    shared = {k: v for k, v in one.items() if k in NODE_OPTIONS and k != "fault"}
    built = []
    for spec in specs:
        mine = {**shared, **{k: v[-1] for k, v in spec.options.items() if k != "fault"}}
        config = node_config(mine, throttle, installed=spec.kind == "klipper")
        faults = NodeFaults.parse(options.get("fault", []) + spec.options.get("fault", []))
        built.append((spec, config, faults))
    sim = SimBus(channel, bitrate, throttle)
    handle = SimCanHandle(sim)
    # Nodes are made on the clock thread's terms but before it runs: nothing races yet.
    for spec, config, faults in built:
        node = CanNode(sim, spec.kind, spec.uuid, config, faults)
        sim.nodes.append(node)
        handle.nodes.append(node)
    sim.start()
    return handle


def start_sim_can(url: str) -> SimCanHandle:
    """Start the simulated bus ``sim://can?...`` describes. Raises ValueError."""
    protocol, options = parse_sim_url(url)
    if protocol != "can":
        raise ValueError(f"not a CAN simulator URL: {url!r} (expected sim://can?node=...)")
    return start_sim_can_options(options)
