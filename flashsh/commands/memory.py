"""Reading, writing, erasing and checking memories, in OpenOCD's words."""

from __future__ import annotations

import argparse
import sys

import cmd2
from cmd2 import Choices

from flashsh import operations
from flashsh.errors import FlashshError
from flashsh.images import READERS, Image, load_image, save_image
from flashsh.numbers import hexaddr, human_size, looks_like_int, parse_int
from flashsh.progress import ctrl_c_stops_between_pages
from flashsh.protocols.base import Capability, Region
from flashsh.shell import FlashShell

PROGRAM_WORDS = ("verify", "diff", "reset", "force")


def region_choices(app: FlashShell) -> Choices:
    # cmd2 hands module-level completers the app itself, not the command set.
    session = app.session
    if session is None:
        return Choices.from_values(["flash", "eeprom", "0", "1"])
    names = []
    for region in session.known_memory_map.regions:
        names += [region.name, str(region.bank)]
    return Choices.from_values(names)


def program_word_choices(app: FlashShell) -> Choices:
    return Choices.from_values(PROGRAM_WORDS)


def _int(text: str) -> int:
    try:
        return parse_int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _byte(text: str) -> int:
    value = _int(text)
    if not 0 <= value <= 0xFF:
        raise argparse.ArgumentTypeError(f"{text} is not a byte (0..0xff)")
    return value


class MemoryCommands(cmd2.CommandSet[FlashShell]):
    DEFAULT_CATEGORY = "Memory"

    def _region(self, key: str) -> Region:
        session = self._cmd.require_session()
        return session.memory_map.region(int(key) if key.isdigit() else key)

    def _load(self, path: str, address: int | None, fmt: str | None) -> Image:
        session = self._cmd.require_session()
        image = load_image(
            self._cmd.resolve_input(path),
            address=address,
            default_address=session.memory_map.app_start,
            fmt=fmt,
        )
        for note in image.notes:
            self._cmd.note(f"note: {note}")
        for region in image.extra:
            self._cmd.note(f"note: {path} also holds {region} data; it is not written")
        return image

    # ------------------------------------------------------------ program

    program_parser = cmd2.Cmd2ArgumentParser(
        description="Write a firmware image (hex, bin or elf).",
        epilog="Words and address may come in any order: "
        "`program klipper.bin verify 0x0`. `diff` reads the chip first and writes only "
        "the pages that differ; `verify` reads back what was written; `reset` starts "
        "the application afterwards; `force` writes an image whose vector table does not "
        "fit the application start. A .bin without ADDRESS goes to the application start.",
    )
    program_parser.add_argument("file", completer=cmd2.Cmd.path_complete, help="image file")
    program_parser.add_argument(
        "words",
        nargs="*",
        metavar="[ADDRESS] [diff] [verify] [reset] [force]",
        choices_provider=program_word_choices,
        help="options in any order",
    )
    program_parser.add_argument(
        "--format", choices=sorted(READERS), help="file format when the extension does not say"
    )

    @cmd2.with_argparser(program_parser)
    def do_program(self, args: argparse.Namespace) -> None:
        """Write FILE to flash, optionally diffing, verifying and starting it."""
        address, flags = _program_words(args.words)
        session = self._cmd.require_session()
        image = self._load(args.file, address, args.format)
        with ctrl_c_stops_between_pages() as cancel:
            result = operations.program(
                session,
                image,
                # A bootloader that starts only verified images (Katapult) reads back
                # before `reset` even when `verify` was not asked for.
                verify="verify" in flags
                or ("reset" in flags and session.bootloader.verify_before_start),
                diff="diff" in flags,
                force="force" in flags,
                progress=self._cmd.progress(),
                cancel=cancel,
            )
        text = (
            f"wrote {result['pages_written']} of {result['pages_total']} pages "
            f"({human_size(image.size)} at {hexaddr(image.start)}) in {result['seconds']:.2f} s"
        )
        if result["erased"] != "nothing":
            text += f", after erasing {result['erased']}"
        if "diff" in flags:
            text += f", {result['pages_unchanged']} pages already matched"
        if "verify" in flags or result["verified"]:
            text += "; verified"
        if "reset" in flags:
            session.start_application()
            result["reset"] = True
            text += "; application started"
        self._cmd.report(result, text)
        for note in result.get("notes") or ():
            self._cmd.note(f"note: {note}")

    verify_parser = cmd2.Cmd2ArgumentParser(description="Compare the chip with an image.")
    verify_parser.add_argument("file", completer=cmd2.Cmd.path_complete, help="image file")
    verify_parser.add_argument("address", nargs="?", type=_int, help="where a .bin belongs")
    verify_parser.add_argument(
        "--format", choices=sorted(READERS), help="file format when the extension does not say"
    )

    @cmd2.with_argparser(verify_parser)
    def do_verify_image(self, args: argparse.Namespace) -> None:
        """Check that the chip holds FILE, byte for byte."""
        session = self._cmd.require_session()
        image = self._load(args.file, args.address, args.format)
        with ctrl_c_stops_between_pages() as cancel:
            result = operations.verify_image(
                session, image, progress=self._cmd.progress(), cancel=cancel
            )
        self._cmd.report(result, f"{args.file}: {human_size(result['bytes'])} match the chip")

    # ------------------------------------------------------------ read

    read_parser = cmd2.Cmd2ArgumentParser(
        description="Save a memory to a file (.hex or .bin by extension)."
    )
    read_parser.add_argument(
        "region", choices_provider=region_choices, help="flash, eeprom, or bank number (0=flash)"
    )
    read_parser.add_argument("file", completer=cmd2.Cmd.path_complete, help="output file")
    read_parser.add_argument("offset", nargs="?", type=_int, default=0, help="from region start")
    read_parser.add_argument("length", nargs="?", type=_int, help="bytes (default: to the end)")

    @cmd2.with_argparser(read_parser)
    def do_read_bank(self, args: argparse.Namespace) -> None:
        """Read REGION (or part of it) into FILE."""
        session = self._cmd.require_session()
        region = self._region(args.region)
        length = region.size - args.offset if args.length is None else args.length
        address = region.start + args.offset
        with ctrl_c_stops_between_pages() as cancel:
            data = operations.read_memory(
                session, region, address, length, progress=self._cmd.progress(), cancel=cancel
            )
        save_image(args.file, address, data)
        self._cmd.report(
            {"region": region.name, "file": args.file, "address": address, "bytes": len(data)},
            f"read {human_size(len(data))} of {region.name} from {hexaddr(address)} "
            f"into {args.file}",
        )

    dump_parser = cmd2.Cmd2ArgumentParser(description="Show memory as a hex dump.")
    dump_parser.add_argument("region", choices_provider=region_choices, help="region or bank")
    dump_parser.add_argument("address", type=_int, help="absolute address")
    dump_parser.add_argument("length", type=_int, nargs="?", default=256, help="bytes (256)")

    @cmd2.with_argparser(dump_parser)
    def do_dump(self, args: argparse.Namespace) -> None:
        """Print LENGTH bytes at ADDRESS as hex and ASCII."""
        session = self._cmd.require_session()
        region = self._region(args.region)
        data = operations.read_memory(session, region, args.address, args.length)
        text = hexdump(args.address, data)
        if not self._cmd.options.json and sys.stdout.isatty():
            text = colour_hexdump(text)
        self._cmd.report({"address": args.address, "data": data.hex()}, text)

    # ------------------------------------------------------------ change

    write_parser = cmd2.Cmd2ArgumentParser(description="Change bytes in memory.")
    write_parser.add_argument("region", choices_provider=region_choices, help="region or bank")
    write_parser.add_argument("address", type=_int, help="absolute address")
    write_parser.add_argument("data", type=_byte, nargs="+", help="byte values (0x12 34 ...)")

    @cmd2.with_argparser(write_parser)
    def do_write(self, args: argparse.Namespace) -> None:
        """Write bytes at ADDRESS; the rest of each page is kept."""
        session = self._cmd.require_session()
        region = self._region(args.region)
        result = operations.write_bytes(session, region, args.address, bytes(args.data))
        self._cmd.report(result, f"wrote {len(args.data)} bytes at {hexaddr(args.address)}")

    @cmd2.with_argparser(cmd2.Cmd2ArgumentParser(description="Erase the whole application area."))
    def do_mass_erase(self, args: argparse.Namespace) -> None:
        """Erase all of flash except the bootloader."""
        session = self._cmd.require_session()
        memory = session.memory_map
        lo, hi = memory.app_start, memory.writable_end()
        if not self._cmd.confirm(f"erase {hexaddr(lo)}-{hexaddr(hi - 1)}?"):
            self._cmd.fail("not erased: the answer was not yes")
            return
        if Capability.CHIP_ERASE not in session.capabilities:
            self._cmd.note(_no_chip_erase_note(session.info.bootloader))
        with ctrl_c_stops_between_pages() as cancel:
            result = operations.erase(session, progress=self._cmd.progress(), cancel=cancel)
        self._cmd.report(result, _erase_text(result))

    erase_parser = cmd2.Cmd2ArgumentParser(
        description="Erase part of flash, rounded out to whole pages."
    )
    erase_parser.add_argument("address", type=_int, help="start address")
    erase_parser.add_argument("length", type=_int, help="bytes")

    @cmd2.with_argparser(erase_parser)
    def do_erase(self, args: argparse.Namespace) -> None:
        """Erase LENGTH bytes at ADDRESS (whole pages; never the bootloader)."""
        session = self._cmd.require_session()
        # Rounded out to whole pages or sectors first, so the question shows what goes.
        first, end = operations.erase_bounds(session, args.address, args.length)
        if not self._cmd.confirm(f"erase {hexaddr(first)}-{hexaddr(end - 1)} (whole pages)?"):
            self._cmd.fail("not erased: the answer was not yes")
            return
        if not session.capabilities & (Capability.CHIP_ERASE | Capability.PAGE_ERASE):
            self._cmd.note(_no_chip_erase_note(session.info.bootloader))
        with ctrl_c_stops_between_pages() as cancel:
            result = operations.erase(
                session, args.address, args.length, progress=self._cmd.progress(), cancel=cancel
            )
        self._cmd.report(result, _erase_text(result))


def _program_words(words: list[str]) -> tuple[int | None, set[str]]:
    address = None
    flags: set[str] = set()
    for word in words:
        if word.lower() in PROGRAM_WORDS:
            flags.add(word.lower())
        elif looks_like_int(word):
            if address is not None:
                raise FlashshError(f"two addresses given: {hexaddr(address)} and {word}")
            address = parse_int(word)
        else:
            raise FlashshError(
                f"program does not understand {word!r}",
                "use an address and the words verify, diff, reset",
            )
    return address, flags


def _no_chip_erase_note(bootloader: str) -> str:
    return (
        f"{bootloader} has no chip erase: it erases each page as it writes it. "
        "Writing 0xFF over the pages instead."
    )


def _erase_text(result: dict[str, object]) -> str:
    start, end = int(result["start"]), int(result["end"])  # type: ignore[call-overload]
    return (
        f"erased {hexaddr(start)}-{hexaddr(end - 1)} ({human_size(end - start)}, "
        f"{result['method']}); the bootloader was left alone"
    )


def hexdump(address: int, data: bytes) -> str:
    """Format as ``hexdump -C`` does, which pygments knows how to colour."""
    lines = []
    for offset in range(0, len(data), 16):
        chunk = data[offset : offset + 16]
        hexes = " ".join(f"{b:02x}" for b in chunk[:8])
        if len(chunk) > 8:
            hexes += "  " + " ".join(f"{b:02x}" for b in chunk[8:])
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{address + offset:08x}  {hexes:<48}  |{text}|")
    return "\n".join(lines)


def colour_hexdump(text: str) -> str:
    from pygments import highlight
    from pygments.formatters import TerminalFormatter
    from pygments.lexers import HexdumpLexer

    return highlight(text, HexdumpLexer(), TerminalFormatter()).rstrip("\n")
