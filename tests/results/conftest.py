"""The results tests' shared setting: LRA's ±10% parameter rule reads the base Transformer's
recipe (`experiment=lra/xfm/<task>`); these tests give it no base (None: the rule is not checked)
unless a test sets one, so that their cells are what their runs alone make them."""

import pytest

from mega_lra.results import param_rule


@pytest.fixture(autouse=True)
def _no_base_transformer(monkeypatch):
    monkeypatch.setattr(param_rule, "base_params", lambda task: None)
