"""bossac (Debian bossa-cli) reads back what flashsh wrote, through the same fake SAMD21
monitor served on a pseudo-terminal: the image lands where bossac's --offset expects it.
The simulator-based checks follow the same pattern on every chip."""

from __future__ import annotations

import os
import select
import shutil
import struct
import subprocess
import threading
import tty

import pytest

from flashsh import operations
from flashsh.images import Image
from flashsh.images.image import Segment
from flashsh.protocols.samba import connect
from flashsh.session import Session
from tests.protocols.samba_fake import FakeSamd21

pytestmark = [
    pytest.mark.debian,
    pytest.mark.skipif(shutil.which("bossac") is None, reason="needs bossac (bossa-cli)"),
]


class PtyServer:
    """Serve a fake monitor on a pty until closed; ``name`` is the slave's path."""

    def __init__(self, fake: FakeSamd21) -> None:
        self.fake = fake
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.name = os.ttyname(slave)
        os.close(slave)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.02)
            if not ready:
                continue
            try:
                data = os.read(self.master, 4096)
            except OSError:  # no client has the slave open
                self.stop.wait(0.01)
                continue
            reply = self.fake._feed(data)
            if reply:
                os.write(self.master, reply)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        os.close(self.master)


def bossac_verify(port: str, path: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bossac", "-p", port, "-U", "-v", "--offset=0x2000", path],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bossac_verifies_what_flashsh_wrote(tmp_path):
    data = struct.pack("<II", 0x20008000, 0x2101) + bytes((i * 29) & 0xFF for i in range(20000))
    path = tmp_path / "klipper.bin"
    path.write_bytes(data)
    fake = FakeSamd21()
    session = Session(connect(fake), "fake")
    operations.program(session, Image([Segment(0x2000, data)], source="klipper.bin"), verify=True)
    server = PtyServer(fake)
    try:
        good = bossac_verify(server.name, str(path))
        assert good.returncode == 0, good.stdout + good.stderr
        assert "Verify successful" in good.stdout
        fake.flash[0x2000 + 15000] ^= 0x40  # one bit flipped: bossac must notice
        bad = bossac_verify(server.name, str(path))
        assert bad.returncode == 2 and "Verify failed" in bad.stdout
    finally:
        server.close()
