"""Commands about the chip rather than its memory contents: ``go``, ``options read``,
``protect`` and ``unprotect``.

They go through generic Bootloader methods (``go``, ``read_options``,
``set_protection``); a bootloader without them says so in one line.
"""

from __future__ import annotations

import argparse

import cmd2

from flashsh.errors import TargetError, UnsupportedError
from flashsh.numbers import hexaddr, parse_int
from flashsh.protocols.base import Capability
from flashsh.session import Session
from flashsh.shell import FlashShell

KINDS = ("write", "readout")
RDP_MEANING = {
    0: "level 0 (not protected)",
    1: "level 1 (flash cannot be read, written or erased through the bootloader)",
    2: "level 2 (permanent)",
}


def _int(text: str) -> int:
    try:
        return parse_int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _protection_parser(verb: str, description: str) -> cmd2.Cmd2ArgumentParser:
    parser = cmd2.Cmd2ArgumentParser(description=description)
    parser.add_argument("kind", choices=KINDS, help="write or readout protection")
    if verb == "protect":
        parser.add_argument("address", nargs="?", type=_int, help="write: from (default: all)")
        parser.add_argument("length", nargs="?", type=_int, help="write: bytes")
    return parser


class TargetCommands(cmd2.CommandSet[FlashShell]):
    DEFAULT_CATEGORY = "Target"

    def _protecting_session(self) -> Session:
        session = self._cmd.require_session()
        if Capability.PROTECTION not in session.capabilities:
            raise UnsupportedError(f"{session.info.bootloader} cannot change protection")
        return session

    def _readout_level(self, session: Session) -> object:
        """The read-out protection level, so that lifting none asks nothing."""
        with session.use() as bootloader:
            return bootloader.read_options().get("readout_protection")

    def _refresh(self, session: Session) -> None:
        # The chip reset and may look different now (protection state, readable size).
        session.info = session.bootloader.identify()
        session.known_memory_map = session.bootloader.memory_map()

    # ------------------------------------------------------------ go

    go_parser = cmd2.Cmd2ArgumentParser(
        description="Leave the bootloader by jumping to an application.",
        epilog="ADDRESS is a vector table (initial stack pointer, then the reset vector), "
        "e.g. the start of flash. `reset` starts the application at its usual place.",
    )
    go_parser.add_argument("address", type=_int, help="vector table address")

    @cmd2.with_argparser(go_parser)
    def do_go(self, args: argparse.Namespace) -> None:
        """Run the program whose vector table is at ADDRESS."""
        session = self._cmd.require_session()
        with session.use() as bootloader:
            bootloader.go(args.address)
            # Nothing answers now; the next command has to bring the bootloader back.
            session.in_bootloader = False
        self._cmd.report(
            {"go": args.address},
            f"jumped to {hexaddr(args.address)}; the bootloader is left",
        )

    # ------------------------------------------------------------ option bytes

    options_parser = cmd2.Cmd2ArgumentParser(description="Show the chip's option bytes.")
    options_parser.add_argument("action", choices=["read"], help="read and decode them")

    @cmd2.with_argparser(options_parser)
    def do_options(self, args: argparse.Namespace) -> None:
        """Read and decode the option bytes: read-out protection, user bits, write
        protection."""
        session = self._cmd.require_session()
        with session.use() as bootloader:
            data = bootloader.read_options()
        self._cmd.report(data, _options_text(data))

    # ------------------------------------------------------------ protection

    @cmd2.with_argparser(
        _protection_parser(
            "protect",
            "Turn on write protection (of ADDRESS LENGTH, default all of flash, kept "
            "with what is protected already) or read-out protection.",
        )
    )
    def do_protect(self, args: argparse.Namespace) -> None:
        """Turn on write or read-out protection; the chip resets afterwards."""
        session = self._protecting_session()
        span = None
        if args.kind == "readout":
            if args.address is not None:
                raise TargetError("read-out protection covers the whole chip; give no address")
            question = (
                "turn on read-out protection? Flash can then no longer be read or written "
                "through the bootloader, and only `unprotect readout` (which erases all of "
                "flash) turns it off"
            )
            if not self._cmd.confirm(question):
                self._cmd.fail("not protected: the answer was not yes")
                return
        elif args.address is not None:
            if not args.length or args.length <= 0:
                raise TargetError("protect write ADDRESS needs a LENGTH above 0")
            span = (args.address, args.address + args.length)
        with session.use() as bootloader:
            result = bootloader.set_protection(args.kind, True, span)
            self._refresh(session)
        self._cmd.report(result, _protection_text(result))

    @cmd2.with_argparser(
        _protection_parser(
            "unprotect",
            "Turn off write protection, or read-out protection (which erases all of flash).",
        )
    )
    def do_unprotect(self, args: argparse.Namespace) -> None:
        """Turn off write or read-out protection; the chip resets afterwards."""
        session = self._protecting_session()
        if args.kind == "readout" and self._readout_level(session) != 0:
            flash = session.memory_map.flash
            question = (
                f"removing read-out protection ERASES ALL OF FLASH "
                f"({hexaddr(flash.start)}-{hexaddr(flash.end - 1)}); go on?"
            )
            if not self._cmd.confirm(question):
                self._cmd.fail("not unprotected, nothing erased: the answer was not yes")
                return
        with session.use() as bootloader:
            result = bootloader.set_protection(args.kind, False)
            self._refresh(session)
        self._cmd.report(result, _protection_text(result))


def _options_text(data: dict[str, object]) -> str:
    lines = []
    for key, value in data.items():
        if isinstance(value, bool):
            value = "yes" if value else "no"
        elif key == "readout_protection" and isinstance(value, int):
            value = RDP_MEANING.get(value, value)
        elif key == "address" and isinstance(value, int):
            value = hexaddr(value)
        elif isinstance(value, dict):
            value = " ".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, int):
            value = f"0x{value:02x}"
        elif isinstance(value, list):
            value = ", ".join(str(v) for v in value) or "none"
        lines.append((key.replace("_", " "), str(value)))
    width = max(len(k) for k, _ in lines)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in lines)


def _protection_text(result: dict[str, object]) -> str:
    state = "on" if result["enabled"] else "off"
    kind = "read-out" if result["kind"] == "readout" else result["kind"]
    if result.get("changed", True):
        text = f"{kind} protection {state}; the chip reset and the bootloader is back"
    else:
        text = f"{kind} protection was {state} already; nothing was sent or erased"
    level = result.get("readout_protection")
    if isinstance(level, int):
        text += f"; read-out protection {RDP_MEANING.get(level, level)}"
    if "write_protected" in result:
        text += f"; write-protected: {result['write_protected']}"
    return text
