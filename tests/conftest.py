import pytest
import torch

from pyro_mcvae.data import make_copula_splits


@pytest.fixture(scope="session")
def copula_small():
    """A small copula split shared by the training tests."""
    return make_copula_splits(n_train=512, n_test=256, seed=0)


@pytest.fixture
def copula_tensor(copula_small):
    return torch.as_tensor(copula_small.train)
