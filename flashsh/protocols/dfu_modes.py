"""A DFU device's two modes (DFU 1.1 §4): run-time mode, where the application shows
a DFU interface with protocol 1 and takes DFU_DETACH, and DFU mode (protocol 2), where
the bootloader takes downloads. Switching goes as dfu-util does it (dfu.md §3.3):
DFU_DETACH, a USB reset unless the device detaches by itself (bitWillDetach), then the
device is followed until it is back on the bus in DFU mode.
"""

from __future__ import annotations

from typing import Any

from flashsh.errors import NoAnswerError, ProtocolError
from flashsh.protocols.dfu_wire import DfuRequests, State, functional_descriptor
from flashsh.protocols.usb_base import FOLLOW_TIMEOUT
from flashsh.transports.usb import UsbDeviceInfo, UsbLink

DFU_MODE = 2  # bInterfaceProtocol in DFU mode; 1 in run-time mode (DFU 1.1 4.1, 4.4)
#: DETACH's wValue: dfu-util asks for 1000 ms (less if the descriptor allows less).
DETACH_MS = 1000


def dfu_interface(device: Any) -> tuple[int, int] | None:
    """(interface number, bInterfaceProtocol) of the device's first DFU interface."""
    try:
        for interface in device[0]:
            if (interface.bInterfaceClass, interface.bInterfaceSubClass) == (0xFE, 0x01):
                return interface.bInterfaceNumber, interface.bInterfaceProtocol
    except (NotImplementedError, OSError, ValueError):
        return None
    return None


def in_dfu_mode(found: UsbDeviceInfo) -> bool:
    """Whether a listed device shows a DFU-mode interface (protocol 2)."""
    iface = dfu_interface(found.device)
    return iface is not None and iface[1] == DFU_MODE


def enter_dfu_mode(link: UsbLink) -> UsbDeviceInfo | None:
    """Switch a device in run-time mode to DFU mode (DFU 1.1 §5.1; dfu.md §3.3) and
    reopen ``link`` on it; return what the run-time device was, or None when it was in
    DFU mode already. Raises DeviceGone when it does not come back in DFU mode."""
    iface = dfu_interface(link.device)
    if iface is None or iface[1] == DFU_MODE:
        return None
    number = iface[0]
    link.claim(number)
    requests = DfuRequests(link, number)
    try:
        state = requests.get_status().state
    except NoAnswerError:
        raise
    except ProtocolError:
        state = State.APP_IDLE  # GETSTATUS is optional in run-time mode (dfu-util: "PIPE")
    if state >= State.IDLE:
        return None  # a DFU 1.0 device in DFU mode says protocol 0 or 1 (dfu-util quirks)
    functional = functional_descriptor(link)
    runtime = link.info
    requests.detach(min(DETACH_MS, functional.detach_timeout_ms) or DETACH_MS)
    if not functional.will_detach:
        link.reset()  # the device waits for this reset to re-enumerate in DFU mode
    found = link.follow(in_dfu_mode, FOLLOW_TIMEOUT, "DFU-mode device after DFU_DETACH")
    link.reopen(found)
    return runtime
