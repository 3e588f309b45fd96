"""The data dictionary Klipper builds into its firmware, found inside an image.

Klipper links a zlib-compressed JSON dictionary into every build (its ``identify``
answer); it names the application ("app": "Klipper" since 2024), the version and the
build's MCU (``config.MCU``, the CMSIS name Katapult reports too). Katapult's flashtool
refuses a klipper.bin built for another MCU; flashsh does the same for every image.
Sources: Klipper3d/klipper scripts/buildcommands.py, klippy/msgproto.py.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass

from flashsh.images.image import Image

#: zlib stream headers (CMF 0x78, FLG for each compression level): Klipper uses level 9.
_HEADERS = (b"\x78\xda", b"\x78\x9c", b"\x78\x5e", b"\x78\x01")


@dataclass(frozen=True)
class KlipperBuild:
    version: str
    mcu: str


def klipper_build(image: Image) -> KlipperBuild | None:
    """The Klipper build an image holds, or None when it holds no Klipper dictionary."""
    for segment in image.segments:
        data = segment.data
        for header in _HEADERS:
            at = data.find(header)
            while at >= 0:
                found = _dictionary(data, at)
                if found is not None:
                    return found
                at = data.find(header, at + 1)
    return None


def _dictionary(data: bytes, at: int) -> KlipperBuild | None:
    try:
        text = zlib.decompressobj().decompress(data[at:], 1 << 20)
        found = json.loads(text)
    except (zlib.error, ValueError):
        return None
    if not isinstance(found, dict):
        return None
    config = found.get("config")
    if found.get("app", "Klipper") != "Klipper" or not isinstance(config, dict):
        return None
    if "commands" not in found or "MCU" not in config:
        return None
    return KlipperBuild(str(found.get("version", "")), str(config["MCU"]))
