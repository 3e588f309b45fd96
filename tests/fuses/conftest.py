"""Fixtures: an in-process shell attached to a fake ISP programmer."""

from __future__ import annotations

import pytest
from fuse_helpers import FakeIsp
from shelldriver import Driver

from flashsh.session import Session


@pytest.fixture
def isp():
    """``isp(chip, fuses=..., lock=...)`` -> (driver, fake) connected to a fake programmer."""
    drivers: list[Driver] = []

    def make(chip: str = "atmega328p", *, json_output: bool = True, **kwargs):
        fake = FakeIsp(chip, **kwargs)
        driver = Driver(json_output=json_output)
        driver.shell.attach(Session(fake, target="fake://isp"))
        drivers.append(driver)
        return driver, fake

    yield make
    for driver in drivers:
        driver.shell.detach()
