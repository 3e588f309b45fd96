"""One simulated node on a CAN bus: the admin layer Katapult and Klipper share, the data
byte stream, and the board (:class:`flashsh.sims.katapult_node.KatapultNode`) behind it.

Admin messages (katapult src/generic/canserial.c, Klipper3d/klipper
src/generic/canserial.c): all nodes listen on 0x3F0 and answer on 0x3F1.

* Katapult answers QUERY_UNASSIGNED (``00``) with ``20 uuid[6] 11`` while it has no node
  id, takes ``11 uuid nodeid`` (8 bytes or more, matching UUID) and drops its id on
  ``12``; it ignores ``01`` and ``02``.
* Klipper answers the query with app byte ``01`` while unassigned, takes ``01 uuid
  nodeid``, and reboots into Katapult on ``02 uuid`` even when it has an id; it ignores
  ``11``/``12``.
* Both drop their id when another node sends on their transmit ID, or when a set-id for
  another UUID carries their node id (Klipper also shuts down, "Another CAN node assigned
  this ID", and keeps running its tasks, so it answers queries again).

Data on ``nodeid*2 + 0x100`` goes into a 192-byte receive buffer (a frame that does not
fit is dropped); responses leave in 8-byte pieces on the ID + 1. Without a node id the
transmit buffer is thrown away (``canserial_tx_task``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flashsh.sims.katapult_faults import NodeFaults
from flashsh.sims.katapult_node import REQUEST_CANBOOT, TX_BUFFER, KatapultNode, NodeConfig

if TYPE_CHECKING:
    from flashsh.sims.can_bus import SimBus

ADMIN_ID = 0x3F0
ADMIN_RESP_ID = 0x3F1
QUERY_UNASSIGNED = 0x00
SET_KLIPPER_NODEID = 0x01
REQUEST_BOOTLOADER = 0x02
SET_CANBOOT_NODEID = 0x11
CLEAR_CANBOOT_NODEID = 0x12
RESP_NEED_NODEID = 0x20


def decode_nodeid(nodeid: int) -> int:
    """The receive CAN ID of a node id (``can_decode_nodeid``)."""
    return (nodeid << 1) + 0x100


class CanNode:
    """A board on the simulated bus; also the :class:`NodeHost` of its Katapult."""

    def __init__(
        self,
        bus: SimBus,
        kind: str,
        uuid: str,
        config: NodeConfig,
        faults: NodeFaults | None = None,
    ) -> None:
        self.bus = bus
        #: "katapult" (started in the bootloader) or "klipper" (application installed).
        self.kind = kind
        self.uuid = uuid
        self.uuid_bytes = bytes.fromhex(uuid)
        self.faults = faults or NodeFaults()
        #: Receive CAN ID, or None while the node has no id.
        self.assigned_id: int | None = None
        #: Went bus-off (fault ``collide``): deaf and mute until the simulator stops.
        self.bus_off = False
        self.data_frames = 0
        self.queries_answered = 0
        self._tx_pending = 0
        self._tx_epoch = 0
        self._klipper: Any = None
        self.node = KatapultNode(config, self, link="can", faults=self.faults, uuid=self.uuid_bytes)
        if kind == "katapult":
            # The node is sitting in Katapult: a request or an empty application put it there.
            self.node.reset(REQUEST_CANBOOT, why="power-on (in Katapult)")
        else:
            self.node.power_on()

    # ------------------------------------------------------------------ inspection

    @property
    def state(self) -> str:
        return self.node.state

    @property
    def flash(self) -> bytes:
        return self.node.flash

    @property
    def events(self) -> list:
        return self.node.events

    @property
    def node_id(self) -> int | None:
        return None if self.assigned_id is None else (self.assigned_id - 0x100) >> 1

    @property
    def app(self) -> str | None:
        """What answers on the bus: "katapult", "klipper", or None (nothing)."""
        if self.state == "bootloader":
            return "katapult"
        if self.state == "application" and self.node.config.app == "klipper":
            return "klipper"
        return None

    def logged(self, text: str) -> bool:
        return self.node.logged(text)

    def __repr__(self) -> str:
        return f"CanNode({self.uuid}, {self.state}, id={self.node_id})"

    # ------------------------------------------------------------------ NodeHost

    def after(self, delay: float, fn: Callable[[], None]) -> None:
        self.bus.clock.after(delay, fn)

    def now(self) -> float:
        return self.bus.clock.now()

    def tx_room(self) -> int:
        return TX_BUFFER["can"] - self._tx_pending

    def send(self, data: bytes) -> None:
        """A Katapult response: cut into 8-byte pieces on the transmit ID."""
        if self.assigned_id is None:
            return
        for i in range(0, len(data), 8):
            piece = data[i : i + 8]
            self._tx_pending += len(piece)
            self._transmit(self.assigned_id + 1, piece, counted=True)

    def on_reset(self) -> None:
        # A reset loses the node id and whatever was waiting to be sent.
        if self.assigned_id is not None:
            self.node.log("node id lost (reset)")
        self.assigned_id = None
        self._tx_pending = 0
        self._tx_epoch += 1
        self._klipper = None

    def on_state(self, state: str) -> None:
        if state == "application" and self.node.config.app == "klipper":
            self._klipper = self._klipper_app()

    # ------------------------------------------------------------------ bus side

    def _transmit(self, can_id: int, data: bytes, *, counted: bool = False) -> None:
        if self.bus_off or self.faults.has("silent"):
            if counted:
                self._tx_pending -= len(data)
            return
        epoch = self._tx_epoch

        def sent() -> bool:
            if epoch != self._tx_epoch:
                return False
            if counted:
                self._tx_pending -= len(data)
            return True

        self.bus.transmit(self, can_id, data, sent)

    def answers_query(self) -> bool:
        """Whether this node would answer QUERY_UNASSIGNED now."""
        return (
            not self.bus_off
            and self.app is not None
            and self.assigned_id is None
            and not self.faults.has("silent")
        )

    def go_bus_off(self) -> None:
        self.bus_off = True
        self.node.log("bus-off after a collision on 0x3F1 (fault)")

    def on_frame(self, can_id: int, data: bytes, from_host: bool) -> None:
        """A standard frame finished on the wire (every node sees every frame)."""
        if self.bus_off:
            return
        if self.assigned_id is not None and can_id == self.assigned_id:
            self._data(data, from_host)
        elif can_id == ADMIN_ID:
            self._admin(data)
        elif self.assigned_id is not None and can_id == self.assigned_id + 1:
            self._conflict("a frame on our transmit ID")

    def _conflict(self, why: str) -> None:
        if self.app is None:
            return
        self.node.log(f"node id conflict ({why}): id dropped")
        if self.app == "klipper":
            self.node.log("shutdown: Another CAN node assigned this ID")
        self.assigned_id = None

    def _admin(self, data: bytes) -> None:
        app = self.app
        if not data or app is None:
            return
        kind = data[0]
        uuid_match = len(data) >= 7 and data[1:7] == self.uuid_bytes
        set_id = SET_CANBOOT_NODEID if app == "katapult" else SET_KLIPPER_NODEID
        if kind == QUERY_UNASSIGNED:
            if self.assigned_id is None:
                self.queries_answered += 1
                answer = bytes([RESP_NEED_NODEID]) + self.uuid_bytes + bytes([set_id])
                self._transmit(ADMIN_RESP_ID, answer)
        elif kind == set_id:
            if len(data) < 8:
                return
            new = decode_nodeid(data[7])
            if uuid_match:
                if new != self.assigned_id:
                    self.assigned_id = new
                    self.node.log(f"node id 0x{data[7]:02x}: rx 0x{new:03X}, tx 0x{new + 1:03X}")
            elif new == self.assigned_id:
                self._conflict("another UUID got our id")
        elif kind == CLEAR_CANBOOT_NODEID and app == "katapult":
            if self.assigned_id is not None:
                self.node.log("node id cleared")
            self.assigned_id = None
        elif kind == REQUEST_BOOTLOADER and app == "klipper" and uuid_match:
            self.node.request_bootloader("CAN admin 02")

    def _data(self, data: bytes, from_host: bool) -> None:
        copies = 1
        if from_host:
            self.data_frames += 1
            n = self.data_frames
            if self.faults.hit("drop", n):
                self.node.log(f"data frame {n} lost (fault)")
                return
            if self.faults.hit("dup", n):
                self.node.log(f"data frame {n} delivered twice (fault)")
                copies = 2
        for _ in range(copies):
            if self.app == "katapult":
                if not self.node.receive(data):
                    self.node.log("receive buffer full: frame dropped")
                self.node.kick()
            elif self._klipper is not None:
                reply = self._klipper.feed(data)
                if reply:
                    self.send(reply)

    def _klipper_app(self) -> Any:
        """Klipper's message layer over CAN, when the serial model is available."""
        try:
            from flashsh.sims.klipper_serial import KlipperSerialApp
        except ImportError:
            return None

        def request() -> None:
            self.after(0, lambda: self.node.request_bootloader("Klipper command"))

        return KlipperSerialApp(self.node.config.mcu, request)
