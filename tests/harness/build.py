"""Build the avr_pty simulator harness (avr_pty.c + Debian's libsimavr).

Usage: python tests/harness/build.py [BUILD_DIR]   -> prints the binary path
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "avr_pty.c"
DEFAULT_BUILD_DIR = HERE.parent / "_build"
SIMAVR_HEADER = "simavr/avr_uart.h"


class HarnessUnavailable(RuntimeError):
    """A tool, header or library needed by the harness is missing."""


def _simavr_flags() -> tuple[list[str], list[str]]:
    """Compiler and linker flags for libsimavr (pkg-config, else defaults)."""
    if shutil.which("pkg-config"):
        try:
            cflags = subprocess.run(
                ["pkg-config", "--cflags", "simavr"], capture_output=True, text=True, check=True
            ).stdout.split()
            libs = subprocess.run(
                ["pkg-config", "--libs", "simavr"], capture_output=True, text=True, check=True
            ).stdout.split()
            return cflags, libs
        except subprocess.CalledProcessError:
            pass
    return ["-I/usr/include/simavr"], ["-lsimavr"]


def build_avr_pty(build_dir: Path | None = None) -> Path:
    """Compile avr_pty if it is missing or older than its source; return its path."""
    build_dir = Path(build_dir or DEFAULT_BUILD_DIR)
    binary = build_dir / "avr_pty"
    if binary.exists() and binary.stat().st_mtime >= SOURCE.stat().st_mtime:
        return binary

    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        raise HarnessUnavailable("no host C compiler (gcc)")
    if not any((Path(d) / SIMAVR_HEADER).exists() for d in ("/usr/include", "/usr/local/include")):
        raise HarnessUnavailable(f"simavr headers missing ({SIMAVR_HEADER}; libsimavr-dev)")
    cflags, libs = _simavr_flags()

    build_dir.mkdir(parents=True, exist_ok=True)
    # Build under a temporary name, then rename: parallel runs never see half a binary.
    fd, tmp = tempfile.mkstemp(prefix="avr_pty.", dir=build_dir)
    os.close(fd)
    cmd = [cc, "-O2", "-Wall", *cflags, str(SOURCE), "-o", tmp, *libs, "-lutil"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        os.unlink(tmp)
        raise HarnessUnavailable(f"cannot build avr_pty: {' '.join(cmd)}\n{proc.stderr}")
    os.chmod(tmp, 0o755)
    os.replace(tmp, binary)
    return binary


if __name__ == "__main__":
    try:
        print(build_avr_pty(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
    except HarnessUnavailable as exc:
        sys.exit(f"build.py: {exc}")
