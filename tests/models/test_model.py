"""The MCVAE program, its guides and priors, and generation."""

import itertools

import pyro
import pyro.poutine as poutine
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyro_mcvae import GMRF, MCVAE, GMRFGuide, GMRFPrior
from pyro_mcvae.infer import seed_everything
from pyro_mcvae.infer.objectives import LatentScale, TraceELBO


def model_and_data(dims=(2, 2, 2), d=2, batch=5, **kw):
    seed_everything(0)
    model = MCVAE.build(list(dims), latent_dim=d, hidden=(8,), **kw)
    xs = [torch.rand(batch, k) for k in dims]
    return model, xs


@pytest.mark.parametrize("dims", [(2, 2, 2), (3, 1, 4)])  # stacked and per-module networks
def test_program_sites_and_shapes(dims):
    model, xs = model_and_data(dims)
    with LatentScale(0.5):  # what the objectives apply around both programs
        guide_tr = poutine.trace(model.guide).get_trace(xs)
        model_tr = poutine.trace(poutine.replay(model.model, trace=guide_tr)).get_trace(xs)
    z = model_tr.nodes["z"]
    assert z["value"].shape == (5, 3 * 2)
    assert isinstance(guide_tr.nodes["z"]["fn"], GMRF)
    assert z["scale"] == 0.5 and guide_tr.nodes["z"]["scale"] == 0.5
    for k, dim in enumerate(dims):
        node = model_tr.nodes[f"x{k}"]
        assert node["is_observed"] and node["fn"].event_shape == (dim,) and node["fn"].batch_shape == (5,)
        assert node["scale"] == 1.0  # observations are not scaled by beta


def test_beta_zero_masks_the_latent_site_and_the_programs_refuse_beta():
    model, xs = model_and_data()
    with LatentScale(0.0):
        tr = poutine.trace(model.guide).get_trace(xs)
    tr.compute_log_prob()
    assert float(tr.nodes["z"]["log_prob_sum"]) == 0.0
    with pytest.raises(ValueError, match="non-negative"):
        LatentScale(-1.0)
    for program in (model.model, model.guide):
        with pytest.raises(ValueError, match="beta is applied by the objective"):
            program(xs, beta=0.5)


def test_guide_marginal_comes_from_its_own_encoder():
    """Diagonal blocks are not rescaled: q(z_k | x) depends on x_k only."""
    model, xs = model_and_data(batch=4)
    q = model.guide.posterior(xs)
    loc, var = model.guide.encode([xs[1]], [1])
    marg = q.marginal([1])
    torch.testing.assert_close(marg.loc, loc[:, 0])
    torch.testing.assert_close(marg.covariance_matrix, torch.diag_embed(var[:, 0]))
    xs2 = [torch.rand_like(xs[0]), xs[1], torch.rand_like(xs[2])]
    torch.testing.assert_close(model.guide.posterior(xs2).marginal([1]).covariance_matrix,
                               marg.covariance_matrix)


@pytest.mark.parametrize("parameterization", ["precision", "covariance", "standard"])
@settings(max_examples=15, deadline=None)
@given(scale=st.floats(1e-3, 1e3), seed=st.integers(0, 2**16))
def test_prior_is_spd_for_any_parameters(parameterization, scale, seed):
    torch.manual_seed(seed)
    prior = GMRFPrior(4, 3, parameterization)
    with torch.no_grad():
        for p in prior.parameters():
            p.copy_(scale * torch.randn_like(p))
    p = prior()
    assert torch.linalg.eigvalsh(p.covariance_matrix.double()).min() > 0


def test_prior_graph_gives_conditional_independence():
    """Precision prior: a non-edge is a zero precision block, i.e. conditional independence."""
    graph = torch.tensor([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=torch.bool)  # chain 0 - 1 - 2
    prior = GMRFPrior(3, 2, "precision", graph=graph, init_offdiag=0.5)
    q = prior().precision_matrix
    assert torch.count_nonzero(q[0:2, 4:6]) == 0 and torch.count_nonzero(q[0:2, 2:4]) > 0
    cond = prior().condition({1: torch.zeros(2)})  # given the middle, the ends are independent
    assert cond.covariance_matrix[0:2, 2:4].abs().max() < 1e-6


@pytest.mark.parametrize("subset", [s for r in (1, 2) for s in itertools.combinations(range(3), r)])
def test_conditional_generation_any_subset(subset):
    model, xs = model_and_data(batch=6)
    out = model.condition({k: xs[k] for k in subset}, num_samples=4)
    assert len(out) == 3
    for k in range(3):
        assert out[k].shape == (4, 6, 2)
        if k in subset:
            assert torch.equal(out[k][2], xs[k])
    free = [k for k in range(3) if k not in subset][0]
    assert not torch.allclose(out[free][0], out[free][1]), "draws per tuple should differ"


def test_conditional_generation_matches_the_prior_conditional():
    """Closed form: decoded draws come from prior.condition at the encoder means."""
    model, xs = model_and_data(batch=3)
    loc, _ = model.guide.encode([xs[0]], [0])
    cond = model.prior().condition({0: loc[:, 0]})
    torch.manual_seed(5)
    z_rest = cond.sample((2,))
    expected = model.decode(torch.cat([loc[:, 0].expand(2, 3, 2), z_rest], -1))
    torch.manual_seed(5)
    out = model.condition({0: xs[0]}, num_samples=2)
    torch.testing.assert_close(out[1], expected[1])
    torch.testing.assert_close(out[2], expected[2])


@pytest.mark.parametrize("likelihood,scale", [("normal", "learned"), ("normal", 0.2), ("laplace", "learned"),
                                              ("laplace", 0.5), ("bernoulli", "learned")])
def test_likelihoods(likelihood, scale):
    model, xs = model_and_data(likelihood=likelihood, scale=scale)
    xs = [x.round() for x in xs] if likelihood == "bernoulli" else xs
    loss = TraceELBO().loss(model.model, model.guide, xs)
    assert torch.isfinite(torch.tensor(loss))
    samples = model.sample(7)
    assert [s.shape for s in samples] == [(7, 2)] * 3
    if likelihood == "bernoulli":
        assert all(((s >= 0) & (s <= 1)).all() for s in samples)
    recon = model.reconstruct(xs)
    assert [r.shape for r in recon] == [(5, 2)] * 3
    learned = [n for n, _ in model.likelihoods.named_parameters()]
    assert bool(learned) == (scale == "learned" and likelihood != "bernoulli")


def test_generation_bad_input():
    model, xs = model_and_data()
    with pytest.raises(ValueError, match="out of range"):
        model.condition({3: xs[0]})
    with pytest.raises(ValueError, match="out of range"):
        model.condition({-1: xs[0]})
    with pytest.raises(ValueError, match="every component"):
        model.condition({0: xs[0], 1: xs[1], 2: xs[2]})
    with pytest.raises(ValueError, match=r"shape \(batch, 2\)"):
        model.condition({0: torch.rand(5, 3)})
    with pytest.raises(ValueError, match="NaN"):
        model.condition({0: torch.full((5, 2), float("nan"))})
    with pytest.raises(ValueError, match="2 components, the model expects 3"):
        model.reconstruct(xs[:2])
    with pytest.raises(ValueError, match="disagree on the batch size"):
        model.reconstruct([xs[0], xs[1][:2], xs[2]])
    with pytest.raises(ValueError, match="positive integer"):
        model.sample(0)
    with pytest.raises(ValueError, match="likelihood"):
        MCVAE.build([2, 2], likelihood="poisson")
    with pytest.raises(ValueError, match="parameterization"):
        GMRFPrior(2, 2, "banana")
    with pytest.raises(ValueError, match="component"):
        GMRFGuide([2, 2], 2).posterior([xs[0]])
