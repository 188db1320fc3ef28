"""Inputs wherever a user passes data (fit, the model and guide programs, reconstruct, condition,
likelihoods, latent samplers): NumPy arrays and float64 tensors are converted to the model's dtype
and give what float32 tensors give; integer data, values outside a likelihood's domain, masks with
an empty row and sizes that are not positive are refused with one clear error."""

import numpy as np
import pyro
import pytest
import torch

from helpers import private
from pyro_mcvae import TrainConfig, fit
from pyro_mcvae.infer import seed_everything
from pyro_mcvae.infer.objectives import TraceELBO
from pyro_mcvae.metrics.likelihood import log_likelihood
from pyro_mcvae.models import build_model, method_names
from pyro_mcvae.samplers import encode_latents
from pyro_mcvae.validation import check_components, check_sizes

QUICK = {"nnmrf": {"hmc_warmup": 5, "completion_warmup": 10}}


def model_of(method, **fields):
    seed_everything(0)
    return build_model(method, [2, 3], hidden=(8,), **QUICK.get(method, {}), **private(method), **fields)


def outputs(model, method, xs, mask):
    """What the model gives for data ``xs``, each part with the same seed."""
    model.eval()  # the NN-MRF's chains stay where they are
    out = {}
    for name, fn in {
        "reconstruct": lambda: model.reconstruct(xs),
        "condition": lambda: model.condition({1: xs[1]}, num_samples=2),
        "loss": lambda: torch.tensor(TraceELBO().loss(model.model, model.guide, xs, mask=mask)),
        "latents": lambda: encode_latents(model, xs, use_mean=False),
        "likelihood": lambda: log_likelihood(model, xs, num_samples=3, seed=0).per_datum,
    }.items():
        if method == "nnmrf" and name in ("likelihood", "condition"):
            continue  # no normalised density (refused by design); conditioning by HMC is slow and
            # converts its data in MCVAE.condition, as every method's
        pyro.set_rng_seed(0)
        out[name] = fn()
    return out


@pytest.mark.filterwarnings(r"ignore:log p\(x_:RuntimeWarning")  # few draws: the estimates' errors are unknown
@pytest.mark.parametrize("method", method_names())
def test_numpy_arrays_and_float64_tensors_give_what_float32_tensors_give(method):
    gen = torch.Generator().manual_seed(0)
    x32 = [torch.rand(6, 2, generator=gen), torch.rand(6, 3, generator=gen)]
    mask = torch.tensor([[True, True], [True, False], [False, True]] * 2)
    inputs = {"float64": ([x.double() for x in x32], mask),
              "numpy": ([x.double().numpy() for x in x32], mask.numpy())}
    model = model_of(method)
    want = outputs(model, method, x32, mask)
    for kind, (xs, m) in inputs.items():
        got = outputs(model, method, xs, m)
        for name in want:
            torch.testing.assert_close(got[name], want[name], rtol=0, atol=0, msg=f"{kind} {name}")
    config = TrainConfig(epochs=1, batch_size=3, lr=1e-3)
    trained = fit(model_of(method), x32, config, progress=False, mask=mask).losses
    for kind, (xs, m) in inputs.items():
        assert fit(model_of(method), xs, config, progress=False, mask=m).losses == trained, kind


@pytest.mark.filterwarnings(r"ignore:log p\(x_:RuntimeWarning")
def test_values_outside_a_likelihoods_domain_are_refused_naming_the_component():
    model = model_of("gmrf", likelihood=["normal", "bernoulli"])
    good = [torch.randn(4, 2), torch.rand(4, 3)]
    bad = [good[0], 4 * torch.rand(4, 3) - 2]
    says = r"component 1 has values in \[-.*\]; its bernoulli likelihood takes values in \[0, 1\]"
    for call in (lambda xs: fit(model, xs, TrainConfig(epochs=1), progress=False),
                 model.reconstruct,
                 lambda xs: model.condition({1: xs[1]}),
                 lambda xs: log_likelihood(model, xs, num_samples=2)):
        call(good)
        with pytest.raises(ValueError, match=says):
            call(bad)
    # Only present entries must lie in the domain: an absent component may hold anything finite.
    absent = torch.tensor([[True, False]] * 4)
    fit(model, bad, TrainConfig(epochs=1), progress=False, mask=absent)
    with pytest.raises(ValueError, match=says):
        fit(model, bad, TrainConfig(epochs=1), progress=False, mask=~absent | torch.tensor([[True, True]] * 4))


def test_integer_data_empty_mask_rows_and_foreign_types_are_refused_clearly():
    """Integer data are refused, not converted (8-bit images need a scale only the caller knows);
    a NumPy mask is read like a tensor one, and an empty row is refused."""
    model = model_of("gmrf")
    xs = [torch.rand(4, 2), torch.rand(4, 3)]
    with pytest.raises(ValueError, match="data component 0 must be floating point, got torch.int64"):
        model.reconstruct([xs[0].long(), xs[1]])
    with pytest.raises(ValueError, match="training data component 1 must be floating point, got a NumPy array of int"):
        fit(model, [xs[0].numpy(), np.ones((4, 3), dtype=np.int64)], TrainConfig(epochs=1), progress=False)
    with pytest.raises(ValueError, match="must be a torch tensor or a NumPy array, got list"):
        model.reconstruct([xs[0].tolist(), xs[1]])
    with pytest.raises(ValueError, match="a row of mask is all False"):
        fit(model, xs, TrainConfig(epochs=1), progress=False, mask=np.array([[True, True]] * 2 + [[False, True]] * 2)
            & np.array([[True, True]] * 3 + [[False, False]]))
    # One (batch, M, D) NumPy array for components of equal sizes, as one tensor.
    stacked = np.random.default_rng(0).random((4, 2, 2))
    assert [x.dtype for x in check_components(stacked, [2, 2], dtype=torch.float32)] == [torch.float32] * 2
    assert build_model("gmrf", [2, 2], hidden=(8,)).reconstruct(stacked)[0].shape == (4, 2)


@pytest.mark.parametrize("method", method_names())
@pytest.mark.parametrize("dims", [[2, 0], [2, -1], [2, 1.5], [], "23"])
def test_component_sizes_must_be_positive_integers(method, dims):
    with pytest.raises(ValueError, match="component sizes must be"):
        build_model(method, dims, **private(method))


def test_check_sizes():
    assert check_sizes([3, np.int64(10), 16]) == [3, 10, 16]
    for bad in ([True, 2], [0], None, 3):
        with pytest.raises(ValueError, match="component sizes"):
            check_sizes(bad)
