"""Fuse and lock bytes: ``fuse read|write|set|preset`` and ``lock read|write``.

Only programmers that reach the fuses (ISP) can do these; on a serial bootloader the
commands say so in one line. Every write shows old -> new, asks at the prompt, and is
read back; the guard in flashsh.fuses refuses settings that can brick a board.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import cmd2
from cmd2 import Choices, Completions

from flashsh import fuse_ops, fuses
from flashsh.chips.fuses import FUSE_NAMES, FuseByte, FusePart, fuse_part, fuse_parts
from flashsh.errors import FlashshError
from flashsh.shell import FlashShell

# Completers defined outside a CommandSet class are called with the cmd2 app itself.


def _part(app: FlashShell) -> FusePart | None:
    session = app.session
    if session is None:
        return None
    try:
        return fuse_part(session.info.chip)
    except FlashshError:
        return None


def _fuse_bytes(app: FlashShell) -> list[FuseByte]:
    part = _part(app)
    parts = [part] if part else list(fuse_parts().values())
    seen: dict[str, FuseByte] = {}
    for each in parts:
        for byte in each.fuses.values():
            seen.setdefault(byte.name + ":" + ",".join(f.name for f in byte.fields), byte)
    return list(seen.values())


def fuse_name_choices(app: FlashShell) -> Choices:
    part = _part(app)
    return Choices.from_values(list(part.fuses) if part else list(FUSE_NAMES), is_sorted=True)


def preset_choices(app: FlashShell) -> Choices:
    part = _part(app)
    parts = [part] if part else list(fuse_parts().values())
    return Choices.from_values(sorted({n for p in parts for n in p.presets}))


def lock_choices(app: FlashShell) -> Choices:
    part = _part(app) or next(iter(fuse_parts().values()))
    return Choices.from_values(sorted(part.lock_presets))


def assignment_complete(
    app: FlashShell, text: str, line: str, begidx: int, endidx: int
) -> Completions:
    """``BOO`` -> ``BOOTSZ=``; ``BOOTSZ=`` -> ``BOOTSZ=256W`` ... (values of the chip)."""
    bytes_ = _fuse_bytes(app)
    if "=" not in text:
        names = sorted({f"{f.name}=" for b in bytes_ for f in b.fields})
        found = app.basic_complete(text, line, begidx, endidx, names)
        return replace(found, allow_finalization=False)  # the value comes next
    name = text.split("=", 1)[0]
    try:
        _, field, bit = fuses.find_field(bytes_, name)
    except FlashshError:
        return Completions()
    values = ["0", "1"] if bit is not None else fuses.value_names(field)
    choices = [f"{name}={v}" for v in values]
    return app.basic_complete(text, line, begidx, endidx, choices, sort=False)


def _with_force(parser: cmd2.Cmd2ArgumentParser) -> cmd2.Cmd2ArgumentParser:
    parser.add_argument(
        "--force", action="store_true", help="write even what the guard refuses (can brick)"
    )
    return parser


class FuseCommands(cmd2.CommandSet[FlashShell]):
    DEFAULT_CATEGORY = "Fuses"

    fuse_parser = cmd2.Cmd2ArgumentParser(
        description="Read and change the fuse bytes (needs an ISP programmer).",
        epilog="`help fuse SUBCOMMAND` for details; docs/fuses.md explains every field.",
    )
    fuse_parser.add_subparsers(title="subcommands", metavar="SUBCOMMAND", required=True)

    @cmd2.with_argparser(fuse_parser)
    def do_fuse(self, args: argparse.Namespace) -> None:
        """Read, write, set or preset the fuse bytes."""
        args.cmd2_subcommand_func(args)

    lock_parser = cmd2.Cmd2ArgumentParser(
        description="Read and write the lock byte (needs an ISP programmer)."
    )
    lock_parser.add_subparsers(title="subcommands", metavar="SUBCOMMAND", required=True)

    @cmd2.with_argparser(lock_parser)
    def do_lock(self, args: argparse.Namespace) -> None:
        """Read or write the lock byte."""
        args.cmd2_subcommand_func(args)

    # ------------------------------------------------------------ fuse

    @cmd2.as_subcommand_to(
        "fuse",
        "read",
        cmd2.Cmd2ArgumentParser(description="Show each fuse byte in hex and field by field."),
        help="show the fuses, decoded",
    )
    def fuse_read(self, args: argparse.Namespace) -> None:
        session = self._cmd.require_session()
        part = fuse_ops.part_of(session)
        result = fuse_ops.read_fuses(session)
        text = [f"{part.name} fuses (one-bit fields: 0 = programmed = on)"]
        text += [fuses.describe(part.byte(n), d["value"]) for n, d in result["fuses"].items()]
        self._cmd.report(result, "\n".join(text))

    write_parser = _with_force(
        cmd2.Cmd2ArgumentParser(
            description="Write one fuse byte; shows what changes and reads it back."
        )
    )
    write_parser.add_argument(
        "name", choices_provider=fuse_name_choices, help="lfuse, hfuse, efuse"
    )
    write_parser.add_argument("value", help="byte value: 0xd8, 216, 0b11011000")

    @cmd2.as_subcommand_to("fuse", "write", write_parser, help="write one fuse byte")
    def fuse_write(self, args: argparse.Namespace) -> None:
        session = self._cmd.require_session()
        value = fuse_ops.byte_value(args.value)
        self._run(fuse_ops.plan_write(session, args.name.lower(), value, force=args.force))

    set_parser = _with_force(
        cmd2.Cmd2ArgumentParser(
            description="Change fuse fields by name; shows old -> new bit by bit first.",
            epilog="Flags take on/off (on = programmed = 0): CKDIV8=off. Codes take a name "
            "(BOOTSZ=1024W, BOOTSZ=2K, BODLEVEL=2.7V, CKSEL=crystal-8-16mhz) or a number "
            "(0b101, 0x5, 5; write binary with 0b). One bit: BOOTSZ1=0.",
        )
    )
    set_parser.add_argument(
        "assignments", nargs="+", metavar="FIELD=VALUE", completer=assignment_complete
    )

    @cmd2.as_subcommand_to("fuse", "set", set_parser, help="change fields: BOOTSZ=1024W ...")
    def fuse_set(self, args: argparse.Namespace) -> None:
        session = self._cmd.require_session()
        self._run(fuse_ops.plan_set(session, args.assignments, force=args.force))

    preset_parser = _with_force(
        cmd2.Cmd2ArgumentParser(
            description="Write a named set of fuse values; without NAME, list them."
        )
    )
    preset_parser.add_argument(
        "name", nargs="?", choices_provider=preset_choices, help="klipper, arduino, factory"
    )

    @cmd2.as_subcommand_to("fuse", "preset", preset_parser, help="write or list presets")
    def fuse_preset(self, args: argparse.Namespace) -> None:
        session = self._cmd.require_session()
        if args.name is None:
            self._list_presets(fuse_ops.part_of(session))
            return
        self._run(fuse_ops.plan_preset(session, args.name, force=args.force))

    # ------------------------------------------------------------ lock

    @cmd2.as_subcommand_to(
        "lock",
        "read",
        cmd2.Cmd2ArgumentParser(description="Show the lock byte, decoded."),
        help="show the lock bits",
    )
    def lock_read(self, args: argparse.Namespace) -> None:
        session = self._cmd.require_session()
        result = fuse_ops.read_lock(session)
        lock = fuse_ops.part_of(session).lock
        self._cmd.report(result, fuses.describe(lock, result["lock"]["value"]))

    lock_write_parser = _with_force(
        cmd2.Cmd2ArgumentParser(
            description="Write the lock byte (after the fuses and the bootloader).",
            epilog="VALUE is a byte (0x0f) or a preset: unlock (0x3f), bootloader-protect "
            "(0x0f). Lock bits return to 1 only through a chip erase.",
        )
    )
    lock_write_parser.add_argument("value", choices_provider=lock_choices, help="byte or preset")

    @cmd2.as_subcommand_to("lock", "write", lock_write_parser, help="write the lock byte")
    def lock_write(self, args: argparse.Namespace) -> None:
        session = self._cmd.require_session()
        self._run(fuse_ops.plan_lock(session, args.value, force=args.force))

    # ------------------------------------------------------------ shared

    def _run(self, plan: fuse_ops.FusePlan) -> None:
        """Show the plan, ask, write, report what was read back."""
        if not plan.changes:
            result = fuse_ops.apply(self._cmd.require_session(), plan)
            self._cmd.report(result, plan.text() + "\nnothing to write: the chip holds these")
            return
        self._cmd.note(plan.text())
        names = ", ".join(b.name for b, _, _ in plan.changes)
        if not self._cmd.confirm(f"write {names}?"):
            self._cmd.fail("not written: the answer was not yes")
            return
        result = fuse_ops.apply(self._cmd.require_session(), plan)
        done = ", ".join(f"{b.name} 0x{new:02x}" for b, _, new in plan.changes)
        text = f"wrote {done}; read back and verified"
        if plan.lock_after is not None:
            text += (
                f"\nnext: program the bootloader, then `lock write 0x{plan.lock_after:02x}`"
                " to protect it"
            )
        self._cmd.report(result, text)

    def _list_presets(self, part: FusePart) -> None:
        rows = []
        for preset in part.presets.values():
            values = " ".join(f"{n} 0x{v:02x}" for n, v in preset.values.items())
            if preset.lock_after is not None:
                values += f", then lock 0x{preset.lock_after:02x}"
            note = " (UNCONFIRMED)" if preset.unconfirmed else ""
            rows.append((preset.name, values, preset.about + note))
        for preset in part.lock_presets.values():
            rows.append(
                (f"lock {preset.name}", f"lock 0x{preset.values['lock']:02x}", preset.about)
            )
        width = max(len(r[0]) for r in rows)
        text = "\n".join(f"{n:<{width}}  {v:<40}  {a}" for n, v, a in rows)
        data = {
            "chip": part.name,
            "presets": {
                p.name: {
                    "values": p.values,
                    "lock_after": p.lock_after,
                    "about": p.about,
                    "unconfirmed": p.unconfirmed,
                }
                for p in part.presets.values()
            },
            "lock_presets": {
                p.name: {"value": p.values["lock"], "about": p.about}
                for p in part.lock_presets.values()
            },
        }
        self._cmd.report(data, text)
