"""The runnable examples in the statistics docstrings (pingouin style) run and give what they say."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["fastlmm", "gaps", "corrections", "paired", "pooling", "power", "simulate", "family", "longtable", "planner", "missing",
           "designs", "models_compare", "intervals"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    mod = importlib.import_module(f"audit.stats.{name}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
