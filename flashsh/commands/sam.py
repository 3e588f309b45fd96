"""SAM chips through the SAM-BA monitor: ``gpnvm read|set|clear N``.

GPNVM bits are the EEFC's non-volatile configuration bits on SAM3/SAM4 (samba.md §8.2):
bit 0 the security bit, bit 1 boot from flash (0 = the ROM monitor), bit 2 on SAM3X the
flash bank to boot from. ``program`` sets bit 1 itself after writing.
"""

from __future__ import annotations

import argparse

import cmd2

from flashsh.errors import TargetError, UnsupportedError
from flashsh.shell import FlashShell


def _bits_text(bits: int, names: tuple[str, ...]) -> str:
    return "\n".join(f"GPNVM{n}  {(bits >> n) & 1}  {name}" for n, name in enumerate(names))


class SamCommands(cmd2.CommandSet[FlashShell]):
    DEFAULT_CATEGORY = "Target"

    gpnvm_parser = cmd2.Cmd2ArgumentParser(
        description="Read, set or clear the GPNVM bits of a SAM3/SAM4 (SAM-BA monitor).",
        epilog="GPNVM1 = 1 boots the flash, 0 the ROM monitor; GPNVM0 (security) is never "
        "set by flashsh: only an ERASE-pin erase clears it.",
    )
    gpnvm_parser.add_argument("action", choices=["read", "set", "clear"])
    gpnvm_parser.add_argument("bit", nargs="?", type=int, help="bit number (set, clear)")

    @cmd2.with_argparser(gpnvm_parser)
    def do_gpnvm(self, args: argparse.Namespace) -> None:
        """Show or change the GPNVM bits."""
        session = self._cmd.require_session()
        with session.use() as bootloader:
            if not hasattr(bootloader, "set_gpnvm"):
                raise UnsupportedError(f"{session.info.bootloader} has no GPNVM bits")
            names = bootloader.chip.gpnvm  # type: ignore[attr-defined]
            if args.action == "read":
                bits = bootloader.gpnvm_bits()  # type: ignore[attr-defined]
            else:
                if args.bit is None:
                    raise TargetError(f"gpnvm {args.action} needs a bit number")
                value = args.action == "set"
                bits = bootloader.set_gpnvm(args.bit, value)  # type: ignore[attr-defined]
            session.info = bootloader.identify()
        result = {f"gpnvm{n}": (bits >> n) & 1 for n in range(len(names))}
        self._cmd.report(result, _bits_text(bits, names))
