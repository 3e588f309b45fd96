"""Firmware files: reading them into an Image, writing memory dumps, checking the fit.

``load_image`` is the one way in; it picks a reader by ``--format`` or extension (see
``EXTENSIONS`` and ``READERS``). ``check_fits`` compares an Image with a MemoryMap before
anything is written.
"""

from flashsh.images.fits import check_fits
from flashsh.images.image import Image, Page, Segment
from flashsh.images.load import EXTENSIONS, READERS, WRITERS, load_image, save_image

__all__ = [
    "EXTENSIONS",
    "READERS",
    "WRITERS",
    "Image",
    "Page",
    "Segment",
    "check_fits",
    "load_image",
    "save_image",
]
