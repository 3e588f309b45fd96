"""Choosing a reader or writer for a file and turning OS errors into ImageErrors.

Readers and writers are listed as ``"module:function"`` strings and imported only when a
file of that format is used, so a format can be added (UF2, DfuSe) by adding a line here.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from flashsh.errors import ImageError
from flashsh.images.image import Image
from flashsh.images.sniff import guess_format
from flashsh.numbers import hexaddr


class Reader(Protocol):
    def __call__(
        self, source: str, data: bytes, *, address: int | None, default_address: int
    ) -> Image: ...


Encoder = Callable[[int, bytes], bytes]

#: File extension (lower case) -> format name.
EXTENSIONS: dict[str, str] = {
    ".hex": "hex",
    ".ihx": "hex",
    ".ihex": "hex",
    ".eep": "hex",  # avr-objcopy's EEPROM output is Intel HEX
    ".bin": "bin",
    ".elf": "elf",
    ".axf": "elf",
    ".out": "elf",
    ".dfu": "dfu",
    ".uf2": "uf2",
}
#: Format name -> reader, ``(source, data, *, address, default_address) -> Image``.
READERS: dict[str, str] = {
    "hex": "flashsh.images.ihex:read_hex",
    "bin": "flashsh.images.raw:read_bin",
    "elf": "flashsh.images.elf:read_elf",
    "dfu": "flashsh.images.dfu_file:read_dfu",
    "uf2": "flashsh.images.uf2:read_uf2",
}
#: Format name -> encoder, ``(address, data) -> file bytes``, for ``save_image``.
WRITERS: dict[str, str] = {
    "hex": "flashsh.images.ihex:encode_hex",
    "bin": "flashsh.images.raw:encode_bin",
    "uf2": "flashsh.images.uf2:encode_uf2",
}
#: Formats with no addresses of their own: the only ones an explicit address applies to.
#: A DfuSe .dfu has addresses: its reader refuses a different one itself.
PLACED_BY_CALLER = frozenset({"bin", "dfu"})


def load_image(
    path: str | os.PathLike[str],
    *,
    address: int | None = None,
    default_address: int = 0,
    fmt: str | None = None,
) -> Image:
    """Read a firmware file into an Image.

    The format comes from ``fmt`` (``hex``, ``bin``, ``elf``) or else the extension. A raw
    binary goes to ``address``, or to ``default_address`` (the target's application start)
    without one. Files that carry their own addresses accept ``address`` only if it is
    where their data starts. Raises ImageError naming the file for every problem.
    """
    source = os.fspath(path)
    data = _read(source)
    name = _format(source, fmt, READERS, data, "read")
    reader: Reader = _resolve(READERS[name])
    image = reader(source, data, address=address, default_address=default_address)
    if not image.segments and not image.extra:
        raise ImageError(f"{source} holds no data", "check that it is the right file")
    if address is not None and name not in PLACED_BY_CALLER and address != image.start:
        raise ImageError(
            f"{source} is {name} and says where its data goes ({hexaddr(image.start)}); "
            f"it cannot be moved to {hexaddr(address)}",
            "leave out the address, or convert it to .bin to place it elsewhere",
        )
    return image


def save_image(
    path: str | os.PathLike[str], address: int, data: bytes, *, fmt: str | None = None
) -> None:
    """Write ``data`` read from ``address`` to a .hex (keeps the address) or .bin file,
    chosen by ``fmt`` or the extension. Raises ImageError if the file cannot be written."""
    target = os.fspath(path)
    encode: Encoder = _resolve(WRITERS[_format(target, fmt, WRITERS, None, "write")])
    content = encode(address, data)
    try:
        Path(target).write_bytes(content)
    except IsADirectoryError:
        raise ImageError(f"{target} is a directory", "give a file name") from None
    except FileNotFoundError:
        raise ImageError(
            f"cannot write {target}: the folder {os.path.dirname(target) or '.'} does not exist",
            "create it first or choose another place",
        ) from None
    except PermissionError:
        raise ImageError(
            f"cannot write {target}: permission denied", "choose a folder you can write to"
        ) from None
    except OSError as err:
        raise ImageError(f"cannot write {target}: {err.strerror or err}") from None


def _read(source: str) -> bytes:
    try:
        data = Path(source).read_bytes()
    except FileNotFoundError:
        where = "" if os.path.isabs(source) else f" (looked in {os.getcwd()})"
        raise ImageError(f"{source}: no such file{where}", "check the name and folder") from None
    except IsADirectoryError:
        raise ImageError(f"{source} is a directory, not a firmware file") from None
    except PermissionError:
        raise ImageError(
            f"cannot read {source}: permission denied", f"check its permissions (ls -l {source})"
        ) from None
    except OSError as err:
        raise ImageError(f"cannot read {source}: {err.strerror or err}") from None
    if not data:
        raise ImageError(f"{source} is empty", "was the build or download cut short?")
    return data


def _format(
    source: str, fmt: str | None, table: dict[str, str], data: bytes | None, action: str
) -> str:
    """Pick the format from ``fmt`` or the extension; it must be one ``table`` knows."""
    known = ", ".join(sorted(table))
    if fmt is not None:
        name = EXTENSIONS.get("." + fmt.lower().lstrip("."), fmt.lower())
        if name not in table:
            raise ImageError(f"cannot {action} image format {fmt!r}", f"use one of: {known}")
        return name
    extension = os.path.splitext(source)[1].lower()
    name = EXTENSIONS.get(extension, "")
    if name in table:
        return name
    if name:
        raise ImageError(
            f"cannot {action} {name} files like {source}", f"use one of these formats: {known}"
        )
    guess = guess_format(data) if data is not None else None
    what = f"the extension {extension!r}" if extension else "a name without an extension"
    raise ImageError(
        f"cannot tell the format of {source} from {what}",
        f"it looks like {guess}: use --format {guess}"
        if guess in table
        else f"name it .{' or .'.join(sorted(table))}, or use --format ({known})",
    )


def _resolve(spec: str) -> Callable[..., object]:
    module, _, function = spec.partition(":")
    return getattr(importlib.import_module(module), function)
