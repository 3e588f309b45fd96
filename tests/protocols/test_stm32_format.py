"""The serial format flashsh asks for: 8E1 for the STM32 ROM, 8N1 for the AVR bootloaders.

A pty carries no parity, so what flashsh asks for is checked at the pyserial layer
(loop:// and a stand-in port object), and what a port keeps is checked by reading the
terminal settings back.
"""

from __future__ import annotations

import os
import pty

import pytest
import serial
from test_stm32_wire import ScriptedLink

from flashsh.errors import NoAnswerError
from flashsh.protocols import ProbeOptions, detect
from flashsh.protocols.stm32_uart import Stm32Uart
from flashsh.transports.base import parse_format
from flashsh.transports.serial import SerialLink


class RecordingPort:
    """Just enough of pyserial's Serial: records every setting, can refuse parity."""

    def __init__(self, refuse_parity: bool = False) -> None:
        self.timeout = 1.0
        self.baudrate = 115200
        self.bytesize = serial.EIGHTBITS
        self._parity = serial.PARITY_NONE
        self.stopbits = serial.STOPBITS_ONE
        self.refuse_parity = refuse_parity
        self.set: list[tuple[str, object]] = []

    @property
    def parity(self) -> str:
        return self._parity

    @parity.setter
    def parity(self, value: str) -> None:
        self.set.append(("parity", value))
        if value != serial.PARITY_NONE and self.refuse_parity:
            raise OSError(22, "Invalid argument")
        self._parity = value

    def close(self) -> None:
        pass


def test_serial_link_sets_even_parity_through_pyserial():
    port = serial.serial_for_url("loop://", timeout=0.1)
    link = SerialLink(port, "loop://")
    link.set_format("8E1")
    assert (port.bytesize, port.parity, port.stopbits) == (8, serial.PARITY_EVEN, 1)
    link.set_format("8n1")
    assert port.parity == serial.PARITY_NONE
    port.close()


def test_only_what_differs_is_set_and_a_refusal_is_rolled_back():
    port = RecordingPort()
    link = SerialLink(port, "fake")
    link.set_format("8E1")
    link.set_format("8E1")  # unchanged: no second reconfiguration
    assert port.set == [("parity", "E")]
    refusing = RecordingPort(refuse_parity=True)
    link = SerialLink(refusing, "fake")
    link.set_format("8E1")  # does not raise: the ROM may still be a simulator
    # pyserial would retry the refused parity on every later timeout change.
    assert refusing.parity == serial.PARITY_NONE
    assert link.format_in_effect() == "8N1"


def test_format_text_is_checked():
    assert parse_format("8e1") == (8, "E", 1, "8E1")
    with pytest.raises(ValueError, match="not a serial format"):
        parse_format("9X1")


def test_a_pty_reads_back_without_the_parity_and_the_hint_says_so():
    master, slave = pty.openpty()
    port = serial.Serial(os.ttyname(slave), 115200, timeout=0.05)
    try:
        link = SerialLink(port, os.ttyname(slave))
        link.set_format("8E1")
        assert link.serial_format == "8E1"
        assert link.format_in_effect() == "8N1"
        link.read(1, 0.01)  # a new timeout reconfigures the port: must still work
        hint = Stm32Uart.no_answer_hint(link)
        assert "dropped the even parity" in hint and "reads back 8N1" in hint
        assert "BOOT0" in hint and "TX and RX" in hint and "wrong port" in hint
    finally:
        port.close()
        os.close(master)
        os.close(slave)


class FormatLoggingLink(ScriptedLink):
    """A silent line that notes the format each byte went out in."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, bytes]] = []

    def write(self, data: bytes) -> None:
        self.log.append((self.serial_format, bytes(data)))
        super().write(data)


def test_detection_gives_each_probe_its_format_and_tries_the_stm32_last():
    link = FormatLoggingLink()
    with pytest.raises(NoAnswerError) as err:
        detect(link, ProbeOptions(baudrate=115200))
    firsts = [(fmt, data[:1].hex()) for fmt, data in link.log]
    order = list(dict.fromkeys(firsts))
    # GET_SYNC (30 20) and the STK500v2 sign-on (1B ...) at 8N1; the ROM's 0x7F at 8E1,
    # after every AVR probe; then Katapult's CONNECT (01 88 ...) and Klipper's sync byte
    # (7E), back at 8N1; SAM-BA's N# and V# last.
    assert order == [
        ("8N1", "30"),
        ("8N1", "1b"),
        ("8E1", "7f"),
        ("8N1", "01"),
        ("8N1", "7e"),
        ("8N1", "4e"),
        ("8N1", "56"),
    ]
    assert all(fmt == "8E1" for fmt, data in link.log if data == b"\x7f")
    assert "stm32@115200" in str(err.value)
    # Auto-detection that found nothing mentions what an STM32 needs.
    assert "BOOT0" in str(err.value)


def test_only_stm32_gives_the_stm32_causes():
    with pytest.raises(NoAnswerError) as err:
        detect(FormatLoggingLink(), ProbeOptions(protocol="stm32", baudrate=115200))
    message = str(err.value)
    assert message.startswith("no bootloader answered on scripted (tried stm32@115200)")
    assert "TX and RX not crossed" in message and "\n" not in message
