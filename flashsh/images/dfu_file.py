"""DFU files: the DFU 1.1 suffix with its CRC, and ST's DfuSe container (UM0391).

Every DFU file ends in a 16-byte suffix (DFU 1.1 appendix B): the USB ids the file is
for, the DFU version and a CRC over everything before the CRC itself. A plain DFU file
is the firmware followed by that suffix; it has no addresses, so its payload is placed
like a .bin. A DfuSe file (suffix bcdDFU 0x011A) holds a prefix and one or more targets,
one per alternate setting, each a list of elements with their own addresses. Facts:
docs/protocols/dfu.md.

``read_dfu`` reads both kinds into an Image (registered for ``.dfu`` in
flashsh.images.load); ``encode_dfu`` and ``encode_dfuse`` write them.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from flashsh.errors import ImageError
from flashsh.images.image import Image
from flashsh.images.sniff import hint_for_wrong_format
from flashsh.numbers import hexaddr

SUFFIX_LENGTH = 16
SIGNATURE = b"UFD"  # ucDfuSignature: "DFU" stored reversed (DFU 1.1 table B.1)
ANY = 0xFFFF  # idVendor, idProduct, bcdDevice: "any" (DFU 1.1 table B.1)
PLAIN_VERSION = 0x0100  # bcdDFU dfu-suffix writes by default (dfu-util src/suffix.c)
DFUSE_VERSION = 0x011A
_SUFFIX = struct.Struct("<HHHH3sBI")  # bcdDevice idProduct idVendor bcdDFU sig bLength CRC

# UM0391 layouts, all little-endian: prefix, target prefix, element header.
DFUSE_SIGNATURE = b"DfuSe"
TARGET_SIGNATURE = b"Target"
_PREFIX = struct.Struct("<5sBIB")  # szSignature bVersion DFUImageSize bTargets
_TARGET = struct.Struct("<6sBI255sII")  # szSignature bAlternateSetting bTargetNamed
#                                        szTargetName dwTargetSize dwNbElements
_ELEMENT = struct.Struct("<II")  # dwElementAddress dwElementSize

# TI Stellaris prefix (dfu-util src/dfu_file.c): 01 00, address / 1024, payload length.
_STELLARIS = struct.Struct("<BBHI")

_DAMAGED = "the file is damaged or cut short; build or download it again"


def dfu_crc(data: bytes) -> int:
    """dwCRC of a DFU suffix: reflected CRC-32 from 0xFFFFFFFF without the final XOR."""
    return zlib.crc32(data) ^ 0xFFFFFFFF


@dataclass(frozen=True)
class Suffix:
    """The fields of a DFU suffix; 0xFFFF ids match any device."""

    vendor: int = ANY
    product: int = ANY
    device: int = ANY
    dfu_version: int = PLAIN_VERSION
    length: int = SUFFIX_LENGTH


@dataclass(frozen=True)
class Element:
    """One run of bytes of a DfuSe target, at its address."""

    address: int
    data: bytes


@dataclass(frozen=True)
class Target:
    """One DfuSe target: the elements to write through alternate setting ``alt``."""

    alt: int
    elements: tuple[Element, ...]
    name: str = ""

    @property
    def size(self) -> int:
        return sum(len(e.data) for e in self.elements)


class DfuImage(Image):
    """An Image read from a .dfu file, with what its suffix says it is for."""

    def __init__(
        self,
        segments: Iterable[tuple[int, bytes]],
        *,
        suffix: Suffix,
        targets: Sequence[Target] = (),
        **kwargs: object,
    ) -> None:
        super().__init__(segments, **kwargs)  # type: ignore[arg-type]
        self.suffix = suffix
        #: DfuSe targets as read, alt 0 included; empty for a plain DFU file.
        self.targets: tuple[Target, ...] = tuple(targets)

    @property
    def usb_ids(self) -> tuple[int, int]:
        """(idVendor, idProduct) from the suffix; 0xFFFF in either means any."""
        return self.suffix.vendor, self.suffix.product


def usb_id_mismatch(image: Image, *devices: tuple[int, int]) -> str | None:
    """Why ``image`` is not for a device with any of the ``(vid, pid)`` ids given (a
    run-time and a DFU-mode id may both count, as in dfu-util), or None when it is or
    when the image names no device."""
    ids = getattr(image, "usb_ids", None)
    if ids is None:
        return None
    vendor, product = ids
    for vid, pid in devices:
        if vendor in (ANY, vid) and product in (ANY, pid):
            return None
    wanted = f"{'any' if vendor == ANY else f'{vendor:04x}'}:" + (
        "any" if product == ANY else f"{product:04x}"
    )
    found = " or ".join(f"{vid:04x}:{pid:04x}" for vid, pid in devices)
    return f"{image.source} is for USB device {wanted} (its DFU suffix says so), not {found}"


# ------------------------------------------------------------------------- reading


def split_suffix(source: str, data: bytes) -> tuple[bytes, Suffix]:
    """Check the suffix of a DFU file; return the bytes before it and its fields.
    Raises ImageError naming what is wrong: too short, no signature, bad CRC, length."""
    if len(data) < SUFFIX_LENGTH:
        raise ImageError(
            f"{source} is too short for a DFU file: {len(data)} bytes, the DFU suffix "
            f"alone takes {SUFFIX_LENGTH}",
            _DAMAGED,
        )
    device, product, vendor, version, signature, length, crc = _SUFFIX.unpack(data[-SUFFIX_LENGTH:])
    if signature != SIGNATURE:
        raise ImageError(
            f"{source} has no DFU suffix: its last 16 bytes lack the 'UFD' signature",
            hint_for_wrong_format(data, "dfu")
            or "a firmware file without suffix is a .bin: rename it, or add a suffix "
            "with dfu-suffix -a",
        )
    actual = dfu_crc(data[:-4])
    if crc != actual:
        raise ImageError(
            f"{source}: DFU suffix CRC mismatch: the suffix says 0x{crc:08x}, the file's "
            f"bytes give 0x{actual:08x}",
            _DAMAGED,
        )
    if length < SUFFIX_LENGTH or length > len(data):
        raise ImageError(
            f"{source}: DFU suffix length {length} is impossible (at least "
            f"{SUFFIX_LENGTH}, at most the file's {len(data)} bytes)",
            _DAMAGED,
        )
    return data[:-length], Suffix(vendor, product, device, version, length)


def add_suffix(payload: bytes, suffix: Suffix | None = None) -> bytes:
    """``payload`` followed by a 16-byte DFU suffix with ``suffix``'s fields."""
    fields = suffix or Suffix()
    head = payload + struct.pack(
        "<HHHH3sB", fields.device, fields.product, fields.vendor, fields.dfu_version,
        SIGNATURE, SUFFIX_LENGTH,
    )  # fmt: skip
    return head + struct.pack("<I", dfu_crc(head))


def read_dfu(
    source: str, data: bytes, *, address: int | None = None, default_address: int = 0
) -> DfuImage:
    """Read a plain DFU or DfuSe file (told apart by the suffix's bcdDFU).

    A plain file's payload goes to ``address``, else ``default_address``, like a .bin. A
    DfuSe file's alternate-setting-0 elements are the image; other targets go to
    ``image.extra`` (by ``alt N (name)``), which nothing writes. Raises ImageError for a
    damaged suffix or container, and for an ``address`` that moves a DfuSe file.
    """
    payload, suffix = split_suffix(source, data)
    if suffix.dfu_version == DFUSE_VERSION:
        return _read_dfuse(source, payload, suffix, address)
    if payload.startswith(DFUSE_SIGNATURE):
        raise ImageError(
            f"{source} holds a DfuSe container but its suffix says bcdDFU "
            f"0x{suffix.dfu_version:04x}, not 0x{DFUSE_VERSION:04x}",
            "the file was altered after it was built; build it again",
        )
    at = default_address if address is None else address
    if at < 0:
        raise ImageError(f"{source}: cannot place data at negative address {at}")
    notes = []
    stellaris = _stellaris_address(payload)
    if stellaris is not None:
        notes.append(
            f"{source} starts with a TI Stellaris DFU prefix (load address "
            f"{hexaddr(stellaris)}); it is sent as part of the data, as dfu-util does"
        )
    return DfuImage([(at, payload)], suffix=suffix, source=source, format="dfu", notes=notes)


def _stellaris_address(payload: bytes) -> int | None:
    if len(payload) < _STELLARIS.size:
        return None
    kind, reserved, kib, length = _STELLARIS.unpack_from(payload)
    if (kind, reserved) == (1, 0) and length == len(payload) - _STELLARIS.size:
        return kib * 1024
    return None


def _read_dfuse(source: str, body: bytes, suffix: Suffix, address: int | None) -> DfuImage:
    targets, notes = parse_dfuse(source, body)
    flash = [e for t in targets if t.alt == 0 for e in t.elements]
    others: dict[str, list[Element]] = {}
    for target in targets:
        if target.alt != 0:
            label = f"alt {target.alt}" + (f" ({target.name})" if target.name else "")
            others.setdefault(label, []).extend(target.elements)
    if not any(e.data for e in flash):
        listed = ", ".join(others) or "none"
        raise ImageError(
            f"{source} holds no data for alternate setting 0 (flash); its targets: {listed}",
            "build the file with the flash image as alt 0",
        )
    extra = {
        label: Image([(e.address, e.data) for e in elements], source=source, format="dfuse")
        for label, elements in others.items()
    }
    image = DfuImage(
        [(e.address, e.data) for e in flash],
        suffix=suffix,
        targets=targets,
        source=source,
        format="dfuse",
        notes=notes,
        extra=extra,
    )
    if address is not None and address != image.start:
        raise ImageError(
            f"{source} is a DfuSe file and says where its data goes "
            f"({hexaddr(image.start)}); it cannot be moved to {hexaddr(address)}",
            "leave out the address",
        )
    return image


def parse_dfuse(source: str, body: bytes) -> tuple[list[Target], list[str]]:
    """The targets of a DfuSe container (suffix removed), and notes on leftover bytes.
    DFUImageSize is not checked: common tools disagree on whether it counts the suffix.
    Raises ImageError naming the first damaged part."""
    if len(body) < _PREFIX.size or not body.startswith(DFUSE_SIGNATURE):
        raise ImageError(
            f"{source}: the DFU suffix says DfuSe (bcdDFU 0x011a) but the file does not "
            "start with the 'DfuSe' prefix",
            _DAMAGED,
        )
    _, version, _, count = _PREFIX.unpack_from(body)
    if version != 1:
        raise ImageError(f"{source}: DfuSe format version {version}; only version 1 exists")
    pos = _PREFIX.size
    targets: list[Target] = []
    notes: list[str] = []
    for number in range(1, count + 1):
        if pos + _TARGET.size > len(body):
            raise ImageError(
                f"{source}: DfuSe target {number} of {count} is cut short "
                f"(its header needs {_TARGET.size} bytes at offset {pos}, "
                f"the file has {max(len(body) - pos, 0)})",
                _DAMAGED,
            )
        signature, alt, named, raw_name, size, elements = _TARGET.unpack_from(body, pos)
        if signature != TARGET_SIGNATURE:
            raise ImageError(
                f"{source}: DfuSe target {number} lacks its 'Target' signature (offset {pos})",
                _DAMAGED,
            )
        pos += _TARGET.size
        if pos + size > len(body):
            raise ImageError(
                f"{source}: DfuSe target {number} (alt {alt}) is cut short: it says "
                f"{size} bytes, the file holds {len(body) - pos}",
                _DAMAGED,
            )
        name = raw_name.split(b"\0", 1)[0].decode("latin-1") if named else ""
        found, left = _elements(source, body[pos : pos + size], elements, number, alt)
        if left:
            notes.append(f"{source}: {left} unused bytes after the elements of target {number}")
        targets.append(Target(alt, found, name))
        pos += size
    if pos != len(body):
        notes.append(f"{source}: {len(body) - pos} unused bytes after the last DfuSe target")
    return targets, notes


def _elements(
    source: str, block: bytes, count: int, number: int, alt: int
) -> tuple[tuple[Element, ...], int]:
    """Decode ``count`` elements from one target's bytes; return them and how many
    bytes were left over."""
    pos = 0
    found = []
    for index in range(1, count + 1):
        where = f"element {index} of DfuSe target {number} (alt {alt})"
        if pos + _ELEMENT.size > len(block):
            raise ImageError(f"{source}: {where} runs past the end of its target", _DAMAGED)
        address, size = _ELEMENT.unpack_from(block, pos)
        pos += _ELEMENT.size
        if pos + size > len(block):
            raise ImageError(
                f"{source}: {where} at {hexaddr(address)} says {size} bytes, its target "
                f"holds only {len(block) - pos} more",
                _DAMAGED,
            )
        found.append(Element(address, block[pos : pos + size]))
        pos += size
    return tuple(found), len(block) - pos


# ------------------------------------------------------------------------- writing


def encode_dfu(payload: bytes, *, vendor: int = ANY, product: int = ANY,
               device: int = ANY) -> bytes:  # fmt: skip
    """A plain DFU file: ``payload`` and a suffix with bcdDFU 0x0100, as dfu-suffix
    writes it."""
    return add_suffix(payload, Suffix(vendor, product, device, PLAIN_VERSION))


def encode_dfuse(targets: Sequence[Target], *, vendor: int = 0x0483, product: int = 0xDF11,
                 device: int = ANY) -> bytes:  # fmt: skip
    """A DfuSe file holding ``targets``. DFUImageSize counts the whole file, suffix
    included, as dfu-util's dfuse-pack writes it. Raises ValueError for more than 255
    targets or a name over 255 bytes."""
    if len(targets) > 255:
        raise ValueError(f"a DfuSe file holds at most 255 targets, not {len(targets)}")
    body = b""
    for target in targets:
        name = target.name.encode("latin-1")
        if len(name) > 255:
            raise ValueError(f"target name {target.name!r} is over 255 bytes")
        elements = b"".join(_ELEMENT.pack(e.address, len(e.data)) + e.data for e in target.elements)
        body += _TARGET.pack(
            TARGET_SIGNATURE, target.alt, 1 if name else 0, name, len(elements),
            len(target.elements),
        ) + elements  # fmt: skip
    total = _PREFIX.size + len(body) + SUFFIX_LENGTH
    prefix = _PREFIX.pack(DFUSE_SIGNATURE, 1, total, len(targets))
    return add_suffix(prefix + body, Suffix(vendor, product, device, DFUSE_VERSION))


def dfuse_from_image(image: Image, *, alt: int = 0, name: str = "") -> Target:
    """One DfuSe target holding every segment of ``image`` as an element."""
    return Target(alt, tuple(Element(s.address, s.data) for s in image.segments), name)
