"""Serial ports, pyserial URLs and built-in simulators as a ByteLink."""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Callable, Collection
from typing import Any

import serial

from flashsh.errors import TransportError
from flashsh.transports.base import ByteLink, parse_format

SIM_SCHEME = "sim://"

try:
    from termios import error as _TermiosError
except ImportError:  # Windows: pyserial raises SerialException there

    class _TermiosError(Exception):  # type: ignore[no-redef]
        pass


class SerialLink(ByteLink):
    """A ByteLink over any object with pyserial's Serial interface."""

    def __init__(self, port: Any, description: str) -> None:
        self.port = port
        self.description = description
        self._timeout: float | None = port.timeout
        self.has_modem_lines = True
        #: The format still in effect after the driver refused ``set_format``'s.
        self._refused: str | None = None

    def write(self, data: bytes) -> None:
        try:
            self.port.write(data)
        except (OSError, serial.SerialException) as exc:
            raise _gone(self.description, exc) from exc

    def read(self, size: int, timeout: float) -> bytes:
        # Setting pyserial's timeout reconfigures the port (tcsetattr): only when it changes.
        if timeout != self._timeout:
            self.port.timeout = timeout
            self._timeout = timeout
        try:
            return self.remember(bytes(self.port.read(size)))
        except (OSError, serial.SerialException) as exc:
            raise _gone(self.description, exc) from exc

    def discard_input(self) -> None:
        try:
            self.port.reset_input_buffer()
        except (OSError, serial.SerialException) as exc:
            raise _gone(self.description, exc) from exc

    @property
    def baudrate(self) -> int:
        return int(self.port.baudrate)

    @baudrate.setter
    def baudrate(self, value: int) -> None:
        try:
            self.port.baudrate = value
        except (ValueError, OSError, serial.SerialException) as exc:
            raise TransportError(
                f"{self.description} cannot run at {value} baud", "pick another --baud"
            ) from exc

    def set_format(self, fmt: str) -> None:
        """Apply ``fmt`` through pyserial's bytesize, parity and stopbits.

        Only what differs is set (each change is a tcsetattr on a real port). A driver
        that refuses the format (some kernels refuse parity on a pty) does not make this
        fail: the old settings are put back, because pyserial would otherwise retry the
        refused ones on every later timeout change, and ``format_in_effect`` tells.
        """
        bits, parity, stops, text = parse_format(fmt)
        if text == self.serial_format:
            return
        wanted = {"bytesize": bits, "parity": parity, "stopbits": stops}
        before = {name: getattr(self.port, name, None) for name in wanted}
        try:
            for name, value in wanted.items():
                # A simulated port may not model the format; it then just keeps the value.
                if before[name] != value:
                    setattr(self.port, name, value)
            self._refused = None
        except (ValueError, OSError, serial.SerialException, _TermiosError):
            for name, value in before.items():
                with contextlib.suppress(
                    ValueError, OSError, serial.SerialException, _TermiosError
                ):
                    setattr(self.port, name, value)
            self._refused = self.serial_format
        self.serial_format = text

    def format_in_effect(self) -> str | None:
        return _termios_format(self.port) or self._refused

    def set_lines(self, *, dtr: bool | None = None, rts: bool | None = None) -> bool:
        if not self.has_modem_lines:
            return False
        try:
            if dtr is not None:
                self.port.dtr = dtr
            if rts is not None:
                self.port.rts = rts
        except (OSError, serial.SerialException, ValueError):
            # A pty or a network port has no modem lines; the ioctl fails with ENOTTY.
            self.has_modem_lines = False
            return False
        return True

    @property
    def usb_id(self) -> str | None:
        """``vid:pid`` of the USB device behind the port, None when it is not USB.

        A simulated USB board tells its own (it changes when the board re-enumerates as
        another firmware); a real port is looked up in the operating system's list."""
        sim = getattr(self.port, "sim", None)
        if sim is not None:
            return getattr(sim, "usb_id", None)
        found = usb_port_info(getattr(self.port, "port", None) or "")
        return found[0] if found else None

    def close(self) -> None:
        with contextlib.suppress(OSError, serial.SerialException):
            self.port.close()


def _usb_port(location: str) -> str:
    """The USB port part of a location (``1-1.3:1.0`` -> ``1-1.3``): the same after the
    board re-enumerates as another firmware."""
    return location.split(":")[0]


def reappear(
    link: SerialLink,
    usb_id: str | Collection[str],
    timeout: float,
    *,
    elsewhere: Callable[[str], Any] | None = None,
) -> Any:
    """After a USB board was told to reboot into other firmware: the link to the device
    ``usb_id`` (or any of several) that comes back at the same USB port. ``elsewhere``
    is asked about the port on each look too (a bootloader without a serial port, such
    as ST's DFU); whatever it returns other than None is returned. Raises
    TransportError at timeout."""
    wanted = {usb_id} if isinstance(usb_id, str) else set(usb_id)
    deadline = time.monotonic() + timeout
    sim = getattr(link.port, "sim", None)
    if sim is not None:  # a simulated board re-enumerates behind the same port object
        while getattr(sim, "usb_id", None) not in wanted and time.monotonic() < deadline:
            time.sleep(0.02)
        return link
    from serial.tools import list_ports

    device = getattr(link.port, "port", "") or ""
    old = usb_port_info(device)
    where = _usb_port(old[1]) if old else None
    baud = link.baudrate
    link.close()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        for info in list_ports.comports():
            found = f"{info.vid:04x}:{info.pid:04x}" if info.vid is not None else ""
            if found in wanted and (where is None or _usb_port(info.location or "") == where):
                try:
                    return open_serial(info.device, baud, reset_lines=False)
                except TransportError:
                    break  # udev may not have set the permissions yet: look again
        if elsewhere is not None and where is not None:
            found = elsewhere(where)
            if found is not None:
                return found
    raise TransportError(
        f"no USB device {' or '.join(sorted(wanted))} came back in place of {link.description}",
        "check `flashsh -c ports`; the board may have started another bootloader",
    )


def usb_port_info(device: str) -> tuple[str, str] | None:
    """(``vid:pid``, USB location) of a serial device, or None when it is not USB."""
    if not device or "://" in device:
        return None
    from serial.tools import list_ports

    real = os.path.realpath(device)
    for info in list_ports.comports():
        if info.vid is not None and os.path.realpath(info.device) == real:
            return f"{info.vid:04x}:{info.pid:04x}", info.location or ""
    return None


def _termios_format(port: Any) -> str | None:
    """Read the format back from the terminal driver (POSIX ttys only). pyserial never
    reads it back, and a pty or a parity-less UART silently drops PARENB."""
    try:
        import termios

        fd = port.fileno()
        if not os.isatty(fd):
            return None
        cflag = termios.tcgetattr(fd)[2]
    except (
        ImportError,
        AttributeError,
        OSError,
        ValueError,
        serial.SerialException,
        _TermiosError,
    ):
        return None
    sizes = {termios.CS5: 5, termios.CS6: 6, termios.CS7: 7, termios.CS8: 8}
    bits = sizes.get(cflag & termios.CSIZE, 8)
    parity = "N" if not cflag & termios.PARENB else "O" if cflag & termios.PARODD else "E"
    return f"{bits}{parity}{2 if cflag & termios.CSTOPB else 1}"


def open_serial(target: str, baudrate: int, *, reset_lines: bool = True) -> SerialLink:
    """Open a device path, a pyserial URL (``socket://``, ``rfc2217://``, ``spy://``) or
    a ``sim://`` target. Raises TransportError with a hint when the port cannot be opened.

    With ``reset_lines`` False the modem lines are left released on open, so a board
    that resets on DTR is not reset by opening the port.
    """
    if target.startswith(SIM_SCHEME):
        from flashsh.sims.url import open_sim_port

        return SerialLink(open_sim_port(target, baudrate), target)
    try:
        port = serial.serial_for_url(target, baudrate=baudrate, timeout=1.0, do_not_open=True)
        if not reset_lines:
            port.dtr = False
            port.rts = False
        if "://" not in target:
            port.exclusive = True
        port.open()
    except (OSError, serial.SerialException, ValueError) as exc:
        raise _open_error(target, exc) from exc
    return SerialLink(port, target)


def _errno_of(exc: BaseException) -> int | None:
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno
    for arg in getattr(exc, "args", ()):
        if isinstance(arg, int):
            return arg
    cause = exc.__context__
    return _errno_of(cause) if cause is not None else None


def _open_error(target: str, exc: BaseException) -> TransportError:
    code = _errno_of(exc)
    text = str(exc)
    if (
        code == errno.ENOENT
        or "No such file" in text
        or "could not open port" in text
        and ("[Errno 2]" in text)
    ):
        return TransportError(
            f"no such port: {target}", "run `flashsh -c ports` to list serial ports"
        )
    if code in (errno.EACCES, errno.EPERM) or "Permission denied" in text:
        return TransportError(
            f"permission denied on {target}",
            "add yourself to the dialout group (sudo usermod -aG dialout $USER) and log in again",
        )
    if code == errno.EBUSY or "busy" in text.lower() or "lock" in text.lower():
        return TransportError(
            f"{target} is in use by another program",
            "close the serial monitor, OctoPrint or Klipper that holds it",
        )
    if code == errno.ECONNREFUSED or "Connection refused" in text:
        return TransportError(
            f"nothing is listening at {target} (connection refused)",
            "start the serial server on the remote machine, and check host and port",
        )
    if isinstance(exc, ValueError) or "invalid URL" in text or "protocol" in text:
        return TransportError(f"cannot open {target}: {text}", "check the port name or URL")
    return TransportError(f"cannot open {target}: {text}", "check the cable and the port name")


def _gone(description: str, exc: BaseException) -> TransportError:
    return TransportError(
        f"{description} stopped working: {exc}",
        "the board was unplugged or reset its USB; reconnect with `connect`",
    )
