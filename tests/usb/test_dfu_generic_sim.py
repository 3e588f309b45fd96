"""sim://dfu on the wire: the DFU 1.1 state table (dfu.md §3) request by request, its
descriptors in both modes, its options and its faults."""

from __future__ import annotations

import pytest

from flashsh.errors import NoAnswerError, ProtocolError
from flashsh.protocols.dfu_wire import DfuRequests, State, Status, functional_descriptor
from flashsh.sims.dfu_generic import GenericDfu
from flashsh.sims.usb_bus import SimUsbBackend, SimUsbBus, make_device
from flashsh.transports.usb import DeviceGone, UsbLink, open_usb


class Wire:
    """A device on a bus of its own and the seven DFU requests to it."""

    def __init__(self, options: str = "") -> None:
        self.bus = SimUsbBus()
        url = "sim://dfu?throttle=0" + (f"&{options}" if options else "")
        self.sim: GenericDfu = make_device(url)  # type: ignore[assignment]
        self.bus.plug(self.sim)
        self.link: UsbLink = open_usb("usb", backend=SimUsbBackend(self.bus))
        self.link.claim(0)
        self.dfu = DfuRequests(self.link)

    def status(self) -> tuple[Status, State]:
        reply = self.dfu.get_status()
        return Status(reply.status), State(reply.state)

    def stalls(self, call, *args) -> None:
        with pytest.raises(ProtocolError, match="stall"):
            call(*args)

    def reopen(self) -> None:
        self.bus.wait_idle()
        self.link = open_usb("usb", backend=SimUsbBackend(self.bus))
        self.link.claim(0)
        self.dfu = DfuRequests(self.link)


def interface(link: UsbLink) -> tuple[int, int, int]:
    (found,) = link.interfaces()
    return found.bInterfaceClass, found.bInterfaceSubClass, found.bInterfaceProtocol


# ------------------------------------------------------------------ descriptors, options


@pytest.mark.parametrize(
    ("options", "attributes"),
    [("", 0x03), ("tolerant=1", 0x07), ("upload=0", 0x01), ("willdetach=1&tolerant=1", 0x0F)],
)
def test_functional_descriptor_follows_the_options(options, attributes):
    wire = Wire(options + "&transfer=1024" if options else "transfer=1024")
    functional = functional_descriptor(wire.link)
    assert functional.attributes == attributes
    assert (functional.transfer_size, functional.dfu_version) == (1024, 0x0110)
    assert interface(wire.link) == (0xFE, 0x01, 0x02)
    assert wire.link.info.usb_id == "1d50:6015" and wire.link.info.kind == "dfu"


def test_run_time_mode_shows_protocol_1_under_the_application_id():
    wire = Wire("runtime=1&app_id=1209:0002")
    assert interface(wire.link) == (0xFE, 0x01, 0x01)
    assert wire.link.info.usb_id == "1209:0002" and wire.link.info.kind == "dfu"
    assert wire.status() == (Status.OK, State.APP_IDLE)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sim://dfu?colour=red", "unknown option 'colour' for sim://dfu; valid: tolerant,"),
        ("sim://dfu?tolerant=yes", "option tolerant='yes': 0 or 1"),
        ("sim://dfu?transfer=0", "option transfer='0' must be between 1 and 65535"),
        ("sim://dfu?size=lots", "option size='lots' needs a number of bytes"),
        ("sim://dfu?manifest=later", "option manifest='later': wait or vanish"),
        ("sim://dfu?usb_id=smoothie", "option usb_id='smoothie': VID:PID in hex"),
        ("sim://dfu?fault=melt:3", "unknown fault 'melt:3' for sim://dfu; valid: stall:N"),
        ("sim://dfu?fault=stall:0", "fault 'stall:0': counts start at 1"),
    ],
)
def test_bad_options_are_refused(url, message):
    with pytest.raises(ValueError) as caught:
        make_device(url)
    assert str(caught.value).startswith(message)


# ------------------------------------------------------------------ the state table


def test_zero_length_dnload_before_any_data_is_errnotdone():
    wire = Wire()
    wire.stalls(wire.dfu.dnload, 0, b"")
    assert wire.status() == (Status.ERR_NOTDONE, State.ERROR)
    assert wire.dfu.get_state() == State.ERROR  # GETSTATE never changes the state
    wire.dfu.clear_status()
    assert wire.status() == (Status.OK, State.IDLE)


@pytest.mark.parametrize("request_name", ["clear_status", "detach"])
def test_requests_that_dfu_idle_does_not_expect_stall_into_dferror(request_name):
    wire = Wire()
    wire.stalls(getattr(wire.dfu, request_name))
    assert wire.status() == (Status.ERR_STALLEDPKT, State.ERROR)


def test_download_blocks_in_order_then_abort_back_to_idle():
    wire = Wire("transfer=64")
    wire.dfu.dnload(0, b"a" * 64)
    assert wire.dfu.get_state() == State.DNLOAD_SYNC
    assert wire.status() == (Status.OK, State.DNLOAD_IDLE)  # no write time with throttle=0
    wire.stalls(wire.dfu.dnload, 5, b"b" * 64)  # block 1 expected
    wire.dfu.clear_status()
    wire.dfu.dnload(0, b"c" * 64)
    wire.status()
    wire.stalls(wire.dfu.upload, 1, 64)  # no UPLOAD in dfuDNLOAD-IDLE
    wire.dfu.clear_status()
    wire.dfu.dnload(0, b"d" * 10)
    wire.status()
    wire.dfu.abort()
    assert wire.status() == (Status.OK, State.IDLE)
    assert wire.sim.memory[:10] == b"d" * 10 and wire.sim.downloads == 0


def test_a_block_longer_than_wtransfersize_stalls():
    wire = Wire("transfer=64")
    wire.stalls(wire.dfu.dnload, 0, b"x" * 65)
    assert wire.status() == (Status.ERR_STALLEDPKT, State.ERROR)


def test_dnbusy_then_dnload_sync_with_a_write_time():
    wire = Wire("poll=7")
    wire.dfu.dnload(0, b"x" * 100)
    reply = wire.dfu.get_status()
    assert (reply.state, reply.poll_ms) == (State.DNBUSY, 7)
    assert wire.status() == (Status.OK, State.DNLOAD_IDLE)


def test_a_host_that_does_not_wait_out_dnbusy_is_stalled():
    bus = SimUsbBus()
    bus.plug(make_device("sim://dfu?throttle=1&poll=3000"))
    link = open_usb("usb", backend=SimUsbBackend(bus))
    dfu = DfuRequests(link)
    dfu.dnload(0, b"x" * 16)
    assert dfu.get_status().state == State.DNBUSY
    with pytest.raises(ProtocolError, match="stall"):
        dfu.get_status()  # 3 s early


@pytest.mark.parametrize(("size", "lengths"), [(1000, [512, 488]), (1024, [512, 512, 0])])
def test_upload_ends_with_a_short_frame(size, lengths):
    wire = Wire(f"size={size}")
    got = [len(wire.dfu.upload(n, 512)) for n in range(len(lengths))]
    assert got == lengths
    assert wire.status() == (Status.OK, State.IDLE)
    assert wire.dfu.upload(0, 512) == b"\xff" * 512  # a new upload starts over
    assert wire.status() == (Status.OK, State.UPLOAD_IDLE)
    wire.dfu.abort()
    assert wire.status() == (Status.OK, State.IDLE)


def test_write_only_device_stalls_upload():
    wire = Wire("upload=0")
    wire.stalls(wire.dfu.upload, 0, 512)
    assert wire.status() == (Status.ERR_STALLEDPKT, State.ERROR)


def test_tolerant_manifestation_ends_in_idle():
    wire = Wire("tolerant=1&poll=1")
    wire.dfu.dnload(0, b"fw")
    wire.status()
    wire.status()
    wire.dfu.dnload(1, b"")
    reply = wire.dfu.get_status()
    assert (reply.state, reply.poll_ms) == (State.MANIFEST, 20)
    assert wire.status() == (Status.OK, State.IDLE)
    assert wire.sim.downloads == 1 and wire.sim.valid and wire.sim.memory[:2] == b"fw"


def test_manifestation_waits_for_a_usb_reset_then_runs_the_firmware():
    wire = Wire()
    wire.dfu.dnload(0, b"fw")
    wire.status()
    wire.dfu.dnload(1, b"")
    assert wire.status() == (Status.OK, State.MANIFEST)
    assert wire.status() == (Status.OK, State.MANIFEST_WAIT_RESET)
    wire.stalls(wire.dfu.abort)  # only a reset moves it on
    assert wire.status() == (Status.OK, State.MANIFEST_WAIT_RESET)
    assert wire.link.reset()
    assert wire.sim.boots == 1 and not wire.bus.devices()  # its application has no USB


def test_manifest_vanish_leaves_the_bus_when_manifestation_ends():
    wire = Wire("manifest=vanish")
    wire.dfu.dnload(0, b"fw")
    wire.status()
    wire.dfu.dnload(1, b"")
    assert wire.status() == (Status.OK, State.MANIFEST)
    with pytest.raises(DeviceGone):
        wire.dfu.get_status()
    assert wire.sim.boots == 1 and wire.sim.downloads == 1


def test_reset_with_no_valid_firmware_reports_errfirmware():
    wire = Wire()
    wire.link.reset()
    wire.reopen()
    assert wire.status() == (Status.ERR_FIRMWARE, State.ERROR)


# ------------------------------------------------------------------ run-time mode


def test_detach_then_reset_comes_back_in_dfu_mode():
    wire = Wire("runtime=1")
    wire.stalls(wire.dfu.upload, 0, 64)  # run-time mode takes only DETACH, status, state
    wire.dfu.detach(1000)
    assert wire.status() == (Status.OK, State.APP_DETACH)
    old = wire.link.info.address
    wire.link.reset()
    wire.reopen()
    assert interface(wire.link) == (0xFE, 0x01, 0x02)
    assert wire.link.info.address != old and wire.link.info.port == "1-1"
    assert wire.status() == (Status.OK, State.IDLE)


def test_a_reset_after_the_detach_timeout_restarts_the_application():
    wire = Wire("runtime=1")
    wire.dfu.detach(0)  # wait for no reset at all
    wire.link.reset()
    wire.reopen()
    assert interface(wire.link) == (0xFE, 0x01, 0x01)
    assert wire.status() == (Status.OK, State.APP_IDLE)


def test_will_detach_re_enumerates_without_a_reset():
    wire = Wire("runtime=1&willdetach=1")
    wire.dfu.detach(1000)
    wire.reopen()
    assert interface(wire.link) == (0xFE, 0x01, 0x02) and wire.sim.traffic.resets == 0


# ------------------------------------------------------------------ faults


def test_faults_at_their_request_number():
    wire = Wire("fault=stall:2,timeout:3,vanish:5")
    wire.status()
    wire.stalls(wire.dfu.get_status)
    with pytest.raises(NoAnswerError):
        wire.dfu.get_state()
    assert wire.status() == (Status.ERR_STALLEDPKT, State.ERROR)
    with pytest.raises(DeviceGone):
        wire.dfu.get_status()
    assert not wire.bus.devices()
