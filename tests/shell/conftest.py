"""An in-process shell on the built-in simulator, with results read from last_result."""

from __future__ import annotations

import pytest
from shelldriver import Driver


@pytest.fixture
def shell():
    drivers: list[Driver] = []

    def make(url: str | None = None, **options) -> Driver:
        driver = Driver(**options)
        drivers.append(driver)
        if url is not None:
            driver.ok(f"connect '{url}'")
        return driver

    yield make
    for driver in drivers:
        driver.close()
