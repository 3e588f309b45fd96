"""The interactive shell: a cmd2 app holding at most one live session.

Commands live in ``flashsh.commands`` as CommandSets and call ``flashsh.operations``; this
module owns what is common to all of them: the session, the prompt, how results and
errors are shown (text or ``--json``), and running ``-c`` lines and ``.fsh`` scripts so
that the first failure stops them.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cmd2
from cmd2.exceptions import Cmd2ArgparseError

from flashsh import __version__
from flashsh.errors import FlashshError
from flashsh.progress import BarProgress, NoProgress, Progress
from flashsh.protocols import ProbeOptions
from flashsh.session import EarlyOpen, Session

#: cmd2 built-ins that start a shell, Python or an editor: off unless --allow-shell.
UNSAFE_COMMANDS = ("shell", "run_pyscript", "py", "ipy", "edit")


@dataclass
class ShellOptions:
    probe: ProbeOptions
    json: bool = False
    yes: bool = False
    verbose: bool = False
    allow_shell: bool = False
    interactive: bool = True
    #: ``-D NAME=VALUE`` definitions, expanded as ``${NAME}`` in scripts and ``-c``.
    variables: dict[str, str] = field(default_factory=dict)


class NotConnected(FlashshError):
    def __init__(self) -> None:
        super().__init__(
            "not connected to a target", "use `connect PORT` (`ports` lists them) or sim://..."
        )


class FlashShell(cmd2.Cmd):
    """flashsh's command loop."""

    def __init__(self, options: ShellOptions, **kwargs: Any) -> None:
        from flashsh.commands import all_command_sets

        super().__init__(
            allow_cli_args=False,
            allow_redirection=options.allow_shell,
            auto_load_commands=False,
            command_sets=all_command_sets(),
            persistent_history_file=_history_file() if options.interactive else "",
            include_py=options.allow_shell,
            **kwargs,
        )
        self.options = options
        self.session: Session | None = None
        #: UUIDs the last `query` found, offered when completing `connect`.
        self.can_uuids: list[str] = []
        self.early_open: EarlyOpen | None = None
        self.failed = False
        self.stop_requested = False
        self.script_dir: Path | None = None
        self.command_name = ""
        self.last_error: str | None = None
        self.intro = (
            f"flashsh {__version__}: type `help` for commands, `help COMMAND` for details"
            if options.interactive
            else ""
        )
        for name in UNSAFE_COMMANDS:
            if name in self.get_all_commands() and not options.allow_shell:
                self.disable_command(
                    name, f"`{name}` is off; start flashsh with --allow-shell to use it"
                )
        self.update_prompt()

    # ------------------------------------------------------------ session

    def require_session(self) -> Session:
        if self.session is None:
            raise NotConnected()
        return self.session

    def take_early_session(self, target: str, probe: ProbeOptions) -> Session | None:
        """The session the command line began opening before the shell was built, if it
        is for this target with these options (raises what opening it raised)."""
        early, self.early_open = self.early_open, None
        if early is None or early.target != target or early.probe != probe:
            if early is not None:
                early.discard()
            return None
        return early.result()

    def attach(self, session: Session) -> None:
        self.detach()
        self.session = session
        self.update_prompt()

    def detach(self) -> None:
        if self.session is not None:
            session, self.session = self.session, None
            session.close()
        self.update_prompt()

    def update_prompt(self) -> None:
        if self.session is None:
            self.prompt = "flashsh> "
        else:
            where = _short_target(self.session.target)
            info = self.session.info
            what = info.chip if info.chip != "unknown" else info.protocol
            self.prompt = f"flashsh {what}@{where}> "

    def confirm(self, question: str) -> bool:
        """Ask before destroying data. --yes, scripts and -c count as consent: the user
        wrote the command down; only a person at the prompt is asked."""
        if self.options.yes or not self.options.interactive or not sys.stdin.isatty():
            return True
        answer = self.read_input(f"{question} [y/N] ")
        return answer.strip().lower() in ("y", "yes")

    def resolve_input(self, path: str) -> str:
        """Find an input file: as given, else next to the running script, so that shared
        recipes can name the images that travel with them."""
        candidate = Path(path).expanduser()
        if candidate.is_absolute() or candidate.exists() or self.script_dir is None:
            return str(candidate)
        beside = self.script_dir / candidate
        return str(beside) if beside.exists() else str(candidate)

    def progress(self) -> Progress:
        """A bar on an interactive terminal; nothing where a machine reads the output."""
        if self.options.json or not sys.stderr.isatty():
            return NoProgress()
        return BarProgress()

    # ------------------------------------------------------------ output

    def report(self, result: dict[str, Any] | list[Any], text: str = "") -> None:
        """Show a command's result: ``text`` for people, the data itself with --json."""
        self.last_result = result
        if self.options.json:
            self.poutput(json.dumps({"command": self.command_name, "ok": True, "result": result}))
        elif text:
            self.poutput(text)

    def note(self, text: str) -> None:
        """A remark for people (skipped with --json); goes to stderr with -v only."""
        if not self.options.json:
            self.poutput(text)

    def fail(self, message: str) -> None:
        self.failed = True
        self.last_error = message
        if self.options.json:
            record = {"command": self.command_name, "ok": False, "error": message}
            self.poutput(json.dumps(record))
        else:
            self.perror(f"error: {message}")

    def pexcept(self, exception: BaseException, **kwargs: Any) -> None:
        if isinstance(exception, FlashshError):
            self.fail(str(exception))
            return
        self.failed = True
        self.last_error = str(exception)
        if self.options.verbose:
            super().pexcept(exception, **kwargs)
        else:
            self.fail(f"{type(exception).__name__}: {exception}")

    def onecmd(self, statement: Any, *, add_to_history: bool = True) -> bool:
        # Kept past the command's end: a failure is reported after cmd2 has forgotten it.
        self.command_name = getattr(statement, "command", str(statement).split(" ")[0])
        try:
            return super().onecmd(statement, add_to_history=add_to_history)
        except Cmd2ArgparseError:
            # argparse has printed the usage and the complaint already.
            name = getattr(statement, "command", "")
            message = f"bad arguments for `{name}`; `help {name}` shows the usage"
            if self.options.json:
                self.fail(message)
            self.failed = True
            self.last_error = message
            raise

    def default(self, statement: Any) -> bool | None:
        self.fail(f"unknown command {statement.command!r}; `help` lists the commands")
        return None

    def _report_disabled_command_usage(self, *args: Any, message_to_print: str, **kw: Any) -> None:
        # Running a disabled command is a failure: a script must stop there.
        self.fail(message_to_print)

    # ------------------------------------------------------------ batch runs

    def run_line(self, line: str) -> bool:
        """Run one command line; return True when it succeeded."""
        self.failed = False
        self.last_error = None
        self.stop_requested = self.onecmd_plus_hooks(line, raise_keyboard_interrupt=True)
        return not self.failed

    def run_lines(self, lines: Iterable[tuple[str, int, str]]) -> int:
        """Run (source, line number, text) triples, stopping at the first failure.

        Returns the process exit status: 0 when every command succeeded, 1 otherwise.
        """
        for source, number, text in lines:
            self.script_dir = Path(source).resolve().parent if source else None
            try:
                ok = self.run_line(expand_variables(text, self.options.variables))
            except FlashshError as exc:
                ok, self.last_error = False, str(exc)
                self.perror(f"error: {exc}")
            except KeyboardInterrupt:
                ok, self.last_error = False, "stopped by Ctrl-C"
            if not ok:
                if source:
                    self.perror(f"{source}:{number}: {self.last_error or 'command failed'}")
                return 1
            if self.stop_requested:
                break
        return 0


_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_variables(line: str, variables: dict[str, str]) -> str:
    """Replace ``${NAME}`` (or ``${NAME:-default}``) with a ``-D NAME=VALUE`` value, so a
    shared recipe can take the file names and ports that differ from board to board."""

    def value(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in variables:
            return variables[name]
        if default is not None:
            return default
        raise FlashshError(
            f"${{{name}}} is not defined", f"pass -D {name}=VALUE on the command line"
        )

    return _VARIABLE.sub(value, line)


def script_lines(path: str) -> list[tuple[str, int, str]]:
    """Read a .fsh script: one command per line, ``#`` starts a comment line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise FlashshError(f"cannot read script {path}: {exc.strerror}") from exc
    lines = []
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped and not stripped.startswith("#"):
            lines.append((path, number, stripped))
    return lines


def command_lines(text: str) -> list[tuple[str, int, str]]:
    """Split ``-c "cmd; cmd"`` on semicolons outside quotes."""
    parts, current, quote = [], "", ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == ";":
            parts.append(current)
            current = ""
            continue
        current += char
    parts.append(current)
    return [("", i + 1, p.strip()) for i, p in enumerate(parts) if p.strip()]


def split_words(line: str) -> list[str]:
    return shlex.split(line)


def _short_target(target: str) -> str:
    """``/dev/ttyACM0`` -> ``ttyACM0``, ``sim://stk500v1?...`` -> ``sim``: prompts stay short."""
    if "://" in target:
        scheme, _, rest = target.partition("://")
        return scheme if scheme == "sim" else rest.split("?")[0]
    return target.removeprefix("/dev/")


def _history_file() -> str:
    base = Path.home() / ".local" / "state" / "flashsh"
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError:
        return ""
    return str(base / "history")
