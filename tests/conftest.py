import os
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import settings

# The default run (make test, CI) draws the same hypothesis examples every time, so a pass or a
# failure reproduces; HYPOTHESIS_PROFILE=explore draws fresh random examples on every run, to hunt
# for new counterexamples (run it a few times before trusting a change to the mathematics).
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# The test folders mirror the package (tests/models, tests/infer, ...); their shared helpers sit in
# tests/helpers.py, importable as ``helpers`` from every folder.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pyro_mcvae.data import make_copula_splits  # noqa: E402


@pytest.fixture(scope="session")
def copula_small():
    """A small copula split shared by the training tests."""
    return make_copula_splits(n_train=512, n_test=256, seed=0)


@pytest.fixture
def copula_tensor(copula_small):
    return torch.as_tensor(copula_small.train)
