"""Test setup: float64 everywhere, and the size knob for slow scientific tests.

GFLOW_TEST_SIZE=small (what CI sets) runs tests marked `slow` at a reduced size;
GFLOW_TEST_SIZE=full runs them at the size the docs quote.
"""

import os

import jax

jax.config.update("jax_enable_x64", True)

import pytest  # noqa: E402

TEST_SIZE = os.environ.get("GFLOW_TEST_SIZE", "small")


@pytest.fixture
def size() -> str:
    return TEST_SIZE
