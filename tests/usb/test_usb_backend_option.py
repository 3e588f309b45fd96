"""--usb-backend / FLASHSH_USB_BACKEND: any pyusb backend object, named MODULE:CALLABLE."""

from __future__ import annotations

import pytest

from flashsh.errors import TransportError
from flashsh.sims.usb_bus import SimUsbBackend
from flashsh.transports.usb import BACKEND_ENV, load_backend


def test_the_named_callable_gives_the_backend():
    assert isinstance(load_backend("flashsh.sims.usb_bus:backend"), SimUsbBackend)


def test_the_environment_variable_is_used_without_the_option(monkeypatch):
    monkeypatch.setenv(BACKEND_ENV, "flashsh.sims.usb_bus:backend")
    assert isinstance(load_backend(None), SimUsbBackend)


def test_the_option_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv(BACKEND_ENV, "no.such.module:thing")
    assert isinstance(load_backend("flashsh.sims.usb_bus:backend"), SimUsbBackend)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("flashsh.sims.usb_bus", "is not MODULE:CALLABLE"),
        ("no.such.module:backend", "cannot load USB backend"),
        ("flashsh.sims.usb_bus:no_such_name", "cannot load USB backend"),
    ],
)
def test_a_bad_backend_name_is_one_line(spec, message):
    with pytest.raises(TransportError, match=message) as caught:
        load_backend(spec)
    assert "\n" not in str(caught.value)


def test_without_a_name_libusb_is_found_on_this_machine(monkeypatch):
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    backend = load_backend(None)
    assert type(backend).__module__ == "usb.backend.libusb1"
