"""Coupled coordinates (``coupled_dims``): only the leading ``c`` coordinates of each block are
coupled across blocks, in the assembly (``assemble_block_covariance`` with ``(M, M, c, c)``
off-diagonal blocks), the GMRF prior and the GMRF posterior. Checked against dense float64
references written from the construction, and the conditional law against the dense Gaussian
conditioning formula."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import SEEDS
from pyro_mcvae.covariance import assemble_block_covariance
from pyro_mcvae.models import build_model
from pyro_mcvae.models.gmrf import GMRFPrior

MODES = ("blockwise", "elementwise")


def np_coupled_assembly(var, offdiag, eps, delta, mode):
    """Reference for diagonal variances ``var (M, d)`` and ``offdiag (M, M, c, c)``: the matrix
    written entry by entry; only coupled coordinates (``p, q < c``) of different blocks are
    nonzero, scaled as the construction on the coupled coordinates alone prescribes."""
    m, d = var.shape
    c = offdiag.shape[-1]
    t = np.zeros((m, m, c, c))
    for i in range(m):
        for j in range(i + 1, m):
            t[i, j], t[j, i] = offdiag[i, j], offdiag[i, j].T
    lam = var[:, :c].min(1)
    if mode == "blockwise":
        s = np.array([sum(np.linalg.norm(t[i, j], 2) for j in range(m) if j != i) + delta for i in range(m)])
        a = np.repeat(np.minimum(1.0, eps * lam / s)[:, None], c, 1)
    else:
        s = np.abs(t).sum((1, 3)) + delta
        a = np.minimum(1.0, eps * lam[:, None] / s)
    out = np.diag(var.reshape(-1))
    for i in range(m):
        for j in range(m):
            if i != j:
                for p in range(c):
                    for q in range(c):
                        out[i * d + p, j * d + q] = np.sqrt(a[i, p] * a[j, q]) * t[i, j, p, q]
    return out


@settings(max_examples=60, deadline=None)
@given(m=st.integers(2, 5), d=st.integers(2, 6), data=st.data(), mode=st.sampled_from(MODES),
       off_exp=st.sampled_from([-2.0, 0.0, 2.0, 6.0]), seed=SEEDS)
def test_coupled_assembly_is_spd_in_float32_and_matches_the_dense_reference(m, d, data, mode, off_exp, seed):
    c = data.draw(st.integers(1, d - 1))
    rng = np.random.default_rng(seed)
    var = 10.0 ** rng.uniform(-3, 3, size=(m, d))
    off = rng.standard_normal((m, m, c, c)) * 10.0**off_exp
    ref = np_coupled_assembly(var, off, 0.9, 1e-6, mode)
    got32 = assemble_block_covariance(torch.tensor(var, dtype=torch.float32), torch.tensor(off, dtype=torch.float32),
                                      eps=0.9, mode=mode)
    got64 = assemble_block_covariance(torch.tensor(var), torch.tensor(off), eps=0.9, mode=mode)
    np.testing.assert_allclose(got64.numpy(), ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())
    np.testing.assert_allclose(got32.double().numpy(), ref, rtol=2e-5, atol=2e-6 * np.abs(ref).max())
    # SPD: a float32 Cholesky succeeds, and the exact matrix it was rounded from is positive definite
    torch.linalg.cholesky(got32)
    scale = np.sqrt(np.diag(ref))
    assert np.linalg.eigvalsh(ref / scale[:, None] / scale[None, :]).min() > 0


@pytest.mark.parametrize("mode", MODES)
def test_full_diagonal_blocks_equal_the_construction_with_zero_padded_couplings(mode):
    rng = np.random.default_rng(3)
    m, d, c = 4, 5, 2
    a = rng.standard_normal((m, d, d))
    diag = torch.tensor(a @ a.transpose(0, 2, 1) / d + 0.3 * np.eye(d))
    off = torch.tensor(rng.standard_normal((m, m, c, c)) * 3)
    padded = torch.nn.functional.pad(off, (0, d - c, 0, d - c))
    got = assemble_block_covariance(diag, off, mode=mode)
    torch.testing.assert_close(got, assemble_block_covariance(diag, padded, mode=mode), rtol=1e-12, atol=1e-12)


def test_more_coupled_coordinates_than_the_block_is_refused():
    with pytest.raises(ValueError, match="d >= c"):
        assemble_block_covariance(torch.ones(3, 2), torch.zeros(3, 3, 4, 4))


def dense_conditional(mu, cov, ia, ib, z_a):
    """``mu_B|A`` and ``S_B|A`` by the textbook formula in float64 numpy."""
    s_ab = cov[np.ix_(ib, ia)]
    solve = np.linalg.solve(cov[np.ix_(ia, ia)], np.column_stack([z_a - mu[ia], s_ab.T]))
    return mu[ib] + s_ab @ solve[:, 0], cov[np.ix_(ib, ib)] - s_ab @ solve[:, 1:]


@pytest.mark.parametrize("parameterization", ["precision", "covariance"])
@pytest.mark.parametrize("standardized", [False, True])
def test_prior_couples_only_the_leading_coordinates_and_conditions_exactly(parameterization, standardized):
    torch.manual_seed(0)
    m, d, c = 4, 5, 2
    prior = GMRFPrior(m, d, parameterization, standardized=standardized, coupled=c).double()
    assert prior.offdiag.shape == (m, m, c, c)
    with torch.no_grad():
        prior.offdiag.normal_(0, 2.0)
        prior.loc.normal_()
        prior.raw_diag.normal_()
    law = prior()
    cov = law.covariance_matrix.detach().numpy()
    # style coordinates (p >= c) of one block are uncorrelated with every other block
    block = np.arange(m * d) // d
    style = (np.arange(m * d) % d) >= c
    cross = block[:, None] != block[None, :]
    assert np.all(cov[cross & (style[:, None] | style[None, :])] == 0)
    assert np.abs(cov[cross & ~style[:, None] & ~style[None, :]]).max() > 1e-3  # the content is coupled
    # closed-form conditioning on blocks {0, 2} against the dense formula
    z_a = {0: torch.randn(d, dtype=torch.float64), 2: torch.randn(d, dtype=torch.float64)}
    cond = law.condition(z_a)
    ia = np.r_[0:d, 2 * d:3 * d]
    ib = np.r_[d:2 * d, 3 * d:4 * d]
    mu_ref, cov_ref = dense_conditional(law.mean.detach().numpy(), cov, ia, ib,
                                        torch.cat([z_a[0], z_a[2]]).numpy())
    np.testing.assert_allclose(cond.mean.detach().numpy(), mu_ref, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(cond.covariance_matrix.detach().numpy(), cov_ref, rtol=1e-9, atol=1e-10)
    if not standardized:  # diagonal blocks: a generated block's style is its prior marginal, whatever is given
        style_b = np.r_[c:d, d + c:2 * d]
        np.testing.assert_allclose(cond.mean.detach().numpy()[style_b], law.mean.detach().numpy()[ib][style_b],
                                   rtol=1e-12)
        np.testing.assert_allclose(np.diag(cond.covariance_matrix.detach().numpy())[style_b],
                                   np.diag(cov)[ib][style_b], rtol=1e-12)


def test_shared_start_is_bounded_by_the_coupled_coordinates():
    with pytest.raises(ValueError, match="coupled coordinates"):
        GMRFPrior(3, 4, standardized=True, coupled=2, init_shared=3)
    prior = GMRFPrior(3, 4, standardized=True, coupled=2, init_shared=2)
    corr = prior().covariance_matrix.detach()
    torch.testing.assert_close(corr.diagonal(), torch.ones(12), rtol=1e-4, atol=1e-4)
    assert float(corr[0, 4]) > 0.9 and float(corr[2, 6]) == 0.0


def test_posterior_marginals_come_from_their_own_encoder_and_style_is_uncoupled():
    torch.manual_seed(1)
    dims, d, c = [3, 4, 5], 4, 2
    model = build_model("gmrf", dims, block_dim=d, coupled_dims=c, hidden=(8,))
    with torch.no_grad():  # a global network that couples (it starts at zero)
        for p in model.guide.global_net.parameters():
            p.normal_(0, 1.0)
    xs = [torch.randn(6, k) for k in dims]
    q = model.guide.posterior(xs)
    loc, var = model.guide.encode(xs)
    torch.testing.assert_close(q.mean, loc.flatten(-2))
    cov = q.covariance_matrix
    torch.testing.assert_close(torch.diagonal(cov, dim1=-2, dim2=-1), var.flatten(-2))
    block = torch.arange(len(dims) * d) // d
    style = (torch.arange(len(dims) * d) % d) >= c
    cross = block[:, None] != block[None, :]
    assert bool((cov[:, cross & (style[:, None] | style[None, :])] == 0).all())
    assert float(cov.detach()[:, cross & ~style[:, None] & ~style[None, :]].abs().max()) > 1e-4


def test_bad_coupled_dims_is_refused_in_one_line():
    for bad in (0, 5, 1.5, True):
        with pytest.raises(ValueError, match="coupled_dims"):
            build_model("gmrf", [2, 2], block_dim=4, coupled_dims=bad)


def test_coupled_model_trains_and_generates_conditionally():
    import pyro
    from pyro_mcvae.infer.objectives import objective_for

    torch.manual_seed(2)
    pyro.clear_param_store()
    model = build_model("gmrf", [4, 4, 4], block_dim=4, coupled_dims=2, prior_standardized=True,
                        prior_init_shared=2, subset_posteriors=1, subset_max_size=1, hidden=(16,))
    x = torch.randn(32, 3, 4)
    svi = pyro.infer.SVI(model.model, model.guide, pyro.optim.Adam({"lr": 1e-2}), objective_for(model))
    losses = [svi.step(x, beta=1.0) for _ in range(30)]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    out = model.condition({1: x[:, 1]}, num_samples=3)
    assert [tuple(o.shape) for o in out] == [(3, 32, 4)] * 3
