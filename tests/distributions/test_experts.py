"""Tests for the baseline building blocks (product of experts, stratified mixture, subsets,
mixture of products), each against an independent numpy / scipy computation in float64."""

import numpy as np
import pytest
import pyro.distributions as dist
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp

from pyro_mcvae.distributions.experts import (
    StratifiedMixture,
    mixture_of_products,
    nonempty_subsets,
    product_of_gaussian_experts,
    subset_masks,
)

from helpers import SEEDS

FAST = settings(max_examples=40, deadline=None)
T = torch.as_tensor


# ---------------------------------------------------------------------------------------------
# Independent references (numpy, float64)
# ---------------------------------------------------------------------------------------------
def np_poe(loc, scale, present=None, prior=None):
    """Closed form written out: precision = sum of precisions, mean = sum(prec * mu) / precision.
    ``loc``, ``scale``: (..., M, L); ``present``: (..., M) or None; ``prior``: (loc, scale) (..., L)."""
    prec = 1.0 / scale**2
    if present is not None:
        prec = np.where(present[..., None], prec, 0.0)
        loc = np.where(present[..., None], loc, 0.0)
    total = prec.sum(-2)
    weighted = (prec * loc).sum(-2)
    if prior is not None:
        p_prec = 1.0 / prior[1] ** 2
        total = total + p_prec
        weighted = weighted + p_prec * prior[0]
    return weighted / total, 1.0 / np.sqrt(total)


def random_experts(rng, batch, m, size, log10_range=0.5):
    loc = rng.normal(0.0, 2.0, (*batch, m, size))
    scale = 10.0 ** rng.uniform(-log10_range, log10_range, (*batch, m, size))
    return loc, scale


# ---------------------------------------------------------------------------------------------
# Product of Gaussian experts
# ---------------------------------------------------------------------------------------------
@FAST
@given(seed=SEEDS, m=st.integers(1, 4), include_prior=st.booleans())
def test_poe_equals_normalised_product_of_densities_on_a_grid(seed, m, include_prior):
    rng = np.random.default_rng(seed)
    loc, scale = random_experts(rng, (), m, 1)
    loc, scale = loc[:, 0], scale[:, 0]
    x = np.linspace(-25.0, 25.0, 100_001)
    log_density = scipy.stats.norm.logpdf(x[:, None], loc, scale).sum(-1)
    if include_prior:
        log_density += scipy.stats.norm.logpdf(x)
    density = np.exp(log_density - log_density.max())
    density /= np.trapezoid(density, x)
    grid_mean = np.trapezoid(x * density, x)
    grid_var = np.trapezoid((x - grid_mean) ** 2 * density, x)

    out_loc, out_scale = product_of_gaussian_experts(
        T(loc)[:, None], T(scale)[:, None], include_prior=include_prior
    )
    assert out_loc.shape == out_scale.shape == (1,)
    np.testing.assert_allclose(out_loc.item(), grid_mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out_scale.item() ** 2, grid_var, rtol=1e-5)


@FAST
@given(
    seed=SEEDS,
    batch=st.sampled_from([(), (3,), (2, 3)]),
    m=st.integers(1, 5),
    size=st.integers(1, 6),
    prior=st.sampled_from(["none", "standard", "custom"]),
)
def test_poe_matches_numpy_closed_form(seed, batch, m, size, prior):
    rng = np.random.default_rng(seed)
    loc, scale = random_experts(rng, batch, m, size)
    kwargs, np_prior = {}, None
    if prior == "none":
        kwargs["include_prior"] = False
    elif prior == "standard":
        np_prior = (np.zeros(size), np.ones(size))
    else:
        np_prior = random_experts(rng, batch, 1, size)
        np_prior = (np_prior[0][..., 0, :], np_prior[1][..., 0, :])
        kwargs.update(prior_loc=T(np_prior[0]), prior_scale=T(np_prior[1]))
    out_loc, out_scale = product_of_gaussian_experts(T(loc), T(scale), **kwargs)
    ref_loc, ref_scale = np_poe(loc, scale, prior=np_prior)
    assert out_loc.shape == out_scale.shape == (*batch, size)
    np.testing.assert_allclose(out_loc.numpy(), ref_loc, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out_scale.numpy(), ref_scale, rtol=1e-10)


@FAST
@given(seed=SEEDS, m=st.integers(2, 5), include_prior=st.booleans())
def test_absent_experts_have_no_effect(seed, m, include_prior):
    rng = np.random.default_rng(seed)
    batch, size = 4, 3
    loc, scale = random_experts(rng, (batch,), m, size)
    present = rng.random((batch, m)) < 0.5
    present[:, 0] = True  # at least one present expert per row
    out = product_of_gaussian_experts(T(loc), T(scale), T(present), include_prior=include_prior)

    # Garbage (NaN, zero and negative scales) in absent experts changes nothing ...
    junk_loc, junk_scale = loc.copy(), scale.copy()
    junk_loc[~present] = np.nan
    junk_scale[~present] = rng.choice([0.0, -1.0, np.nan, 1e30], size=(~present).sum())[:, None]
    loc_t, scale_t = T(junk_loc).requires_grad_(), T(junk_scale).requires_grad_()
    again = product_of_gaussian_experts(loc_t, scale_t, T(present), include_prior=include_prior)
    torch.testing.assert_close(again, out, rtol=0, atol=0)
    # ... not even in the gradients, which are zero for them and finite everywhere.
    (again[0].sum() + again[1].sum()).backward()
    for grad in (loc_t.grad, scale_t.grad):
        assert torch.isfinite(grad).all()
        assert (grad[T(~present)] == 0).all()

    # and the product is that of the present experts alone, row by row.
    for b in range(batch):
        ref = np_poe(loc[b, present[b]], scale[b, present[b]],
                     prior=(np.zeros(size), np.ones(size)) if include_prior else None)
        np.testing.assert_allclose(out[0][b].numpy(), ref[0], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(out[1][b].numpy(), ref[1], rtol=1e-10)


def test_prior_alone_when_every_expert_is_absent():
    loc, scale = torch.randn(2, 3, 4, dtype=torch.float64), torch.ones(2, 3, 4, dtype=torch.float64)
    mask = torch.tensor([[False] * 3, [True, False, False]])
    out_loc, out_scale = product_of_gaussian_experts(
        loc, scale, mask, prior_loc=torch.full((4,), 0.5, dtype=torch.float64),
        prior_scale=torch.full((4,), 2.0, dtype=torch.float64),
    )
    torch.testing.assert_close(out_loc[0], torch.full((4,), 0.5, dtype=torch.float64))
    torch.testing.assert_close(out_scale[0], torch.full((4,), 2.0, dtype=torch.float64))
    ref = np_poe(loc[1, :1].numpy(), scale[1, :1].numpy(), prior=(np.full(4, 0.5), np.full(4, 2.0)))
    np.testing.assert_allclose(out_loc[1].numpy(), ref[0], rtol=1e-12)


@FAST
@given(seed=SEEDS, m=st.integers(1, 5), include_prior=st.booleans())
def test_poe_extreme_scales_float64(seed, m, include_prior):
    rng = np.random.default_rng(seed)
    loc, scale = random_experts(rng, (3,), m, 4, log10_range=4.0)  # scales in 1e-4 .. 1e4
    out_loc, out_scale = product_of_gaussian_experts(T(loc), T(scale), include_prior=include_prior)
    ref_loc, ref_scale = np_poe(loc, scale, prior=(np.zeros(4), np.ones(4)) if include_prior else None)
    assert torch.isfinite(out_loc).all() and torch.isfinite(out_scale).all()
    np.testing.assert_allclose(out_loc.numpy(), ref_loc, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(out_scale.numpy(), ref_scale, rtol=1e-9)


def test_poe_float32_survives_scales_whose_precisions_overflow():
    # 1/scale^2 overflows float32 for scale 1e-30 and underflows for 1e30; log-precisions do not.
    rng = np.random.default_rng(0)
    loc = rng.normal(size=(5, 3, 2))
    scale = 10.0 ** rng.uniform(-30, 30, size=(5, 3, 2))
    out_loc, out_scale = product_of_gaussian_experts(
        T(loc).float(), T(scale).float(), include_prior=False
    )
    ref_loc, ref_scale = np_poe(loc, scale)
    assert torch.isfinite(out_loc).all() and torch.isfinite(out_scale).all()
    np.testing.assert_allclose(out_loc.numpy(), ref_loc, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out_scale.numpy(), ref_scale, rtol=1e-4)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(loc=torch.zeros(3, 2), scale=torch.ones(4, 2)), "do not broadcast"),
        (dict(loc=torch.zeros(2), scale=torch.ones(2)), r"\(\.\.\., M, L\)"),
        (dict(loc=torch.zeros(3, 2), scale=torch.ones(3, 2, dtype=torch.float64)), "share a dtype"),
        (dict(loc=torch.zeros(3, 2), scale=torch.ones(3, 2), mask=torch.ones(2, dtype=torch.bool)),
         "M=3"),
        (dict(loc=torch.zeros(3, 2), scale=torch.ones(3, 2), mask=torch.ones(3)), "bool"),
        (dict(loc=torch.zeros(3, 2), scale=torch.tensor([[1.0, 1.0], [0.0, 1.0], [1.0, 1.0]])),
         "scales > 0"),
        (dict(loc=torch.zeros(3, 2), scale=-torch.ones(3, 2)), "scales > 0"),
        (dict(loc=torch.zeros(2, 3, 2), scale=torch.ones(2, 3, 2),
              mask=torch.tensor([[True, False, False], [False, False, False]]), include_prior=False),
         "no present expert"),
        (dict(loc=torch.zeros(3, 2), scale=torch.ones(3, 2), prior_loc=torch.zeros(2),
              include_prior=False), "include_prior=False"),
        (dict(loc=torch.zeros(3, 2), scale=torch.ones(3, 2), prior_scale=torch.ones(5)), "L=2"),
        (dict(loc=torch.zeros(3, 2), scale=torch.ones(3, 2), prior_scale=torch.zeros(2)),
         "prior scale"),
    ],
)
def test_poe_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        product_of_gaussian_experts(**kwargs)


def test_poe_ignores_bad_values_of_absent_experts_but_not_present_ones():
    loc, scale = torch.zeros(2, 3), torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 1.0]])
    product_of_gaussian_experts(loc, scale, torch.tensor([True, False]))  # absent: fine
    with pytest.raises(ValueError, match="scale"):
        product_of_gaussian_experts(loc, scale, torch.tensor([False, True]))


# ---------------------------------------------------------------------------------------------
# Stratified mixture
# ---------------------------------------------------------------------------------------------
def np_component_logpdf(family, x, loc, scale):
    if family == "normal":
        return scipy.stats.norm.logpdf(x, loc, scale)
    return scipy.stats.laplace.logpdf(x, loc, scale)


def make_components(family, loc, scale):
    base = dist.Normal(T(loc), T(scale)) if family == "normal" else dist.Laplace(T(loc), T(scale))
    return base.to_event(1)


@FAST
@given(
    seed=SEEDS,
    family=st.sampled_from(["normal", "laplace"]),
    k=st.integers(1, 5),
    batch=st.sampled_from([(), (3,), (2, 3)]),
    size=st.integers(1, 4),
    weighted=st.booleans(),
)
def test_log_prob_matches_scipy_logsumexp(seed, family, k, batch, size, weighted):
    rng = np.random.default_rng(seed)
    loc, scale = random_experts(rng, batch, k, size)
    kwargs = {}
    log_w = np.full((*batch, k), -np.log(k))
    if weighted:
        logits = rng.normal(size=(*batch, k))
        mask = rng.random((*batch, k)) < 0.7
        mask[..., 0] = True
        kwargs = dict(logits=T(logits), mask=T(mask))
        logits = np.where(mask, logits, -np.inf)
        log_w = logits - logsumexp(logits, axis=-1, keepdims=True)
    mix = StratifiedMixture(make_components(family, loc, scale), **kwargs)
    assert mix.batch_shape == batch and mix.event_shape == (size,)
    value = rng.normal(0.0, 3.0, (7, *batch, size))
    # log p(x) = logsumexp_k (log w_k + sum_l log p_k(x_l)), every component scored at every x
    per_comp = np_component_logpdf(family, value[..., None, :], loc, scale).sum(-1)
    ref = logsumexp(per_comp + log_w, axis=-1)
    np.testing.assert_allclose(mix.log_prob(T(value)).numpy(), ref, rtol=1e-10)

    # the stratified samples themselves, (K, *batch, L) -> (K, *batch)
    z = mix.rsample().numpy()
    per_comp = np_component_logpdf(family, z[..., None, :], loc, scale).sum(-1)
    np.testing.assert_allclose(
        mix.log_prob(T(z)).numpy(), logsumexp(per_comp + log_w, axis=-1), rtol=1e-10
    )


def test_rsample_layout_and_each_stratum_follows_its_component():
    torch.manual_seed(0)
    k, batch, size, n = 3, 2, 2, 40_000
    loc = torch.tensor([[[-5.0, 0.0], [0.0, 3.0], [8.0, -2.0]],
                        [[1.0, 1.0], [-1.0, -1.0], [0.5, 2.0]]], dtype=torch.float64)  # (B, K, L)
    scale = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)[:, None].expand(batch, k, size)
    mix = StratifiedMixture(dist.Normal(loc, scale).to_event(1))
    z = mix.rsample((n,))
    assert z.shape == (n, k, batch, size)  # sample_shape + (K,) + batch_shape + event_shape
    assert mix.sample((4, 5)).shape == (4, 5, k, batch, size)
    tol = 5 / np.sqrt(n)
    for j in range(k):
        stratum = z[:, j]  # (n, B, L)
        torch.testing.assert_close(stratum.mean(0), loc[:, j], atol=tol * 2.0, rtol=0)
        torch.testing.assert_close(stratum.std(0), scale[:, j], atol=tol * 2.0, rtol=0)


def test_rsample_is_reparameterised():
    loc = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)  # K=4, L=3
    log_scale = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    mix = StratifiedMixture(dist.Normal(loc, log_scale.exp()).to_event(1))
    z = mix.rsample((6,))
    assert z.requires_grad
    eps = (z - loc) / log_scale.exp()  # the standard normal draws behind z
    z.sum().backward()
    # z = loc + exp(log_scale) * eps: each stratum depends on its own component only.
    torch.testing.assert_close(loc.grad, torch.full_like(loc, 6.0))
    torch.testing.assert_close(log_scale.grad, (eps * log_scale.exp()).detach().sum(0))
    # and the log density of the samples is differentiable too
    loc.grad = None
    mix = StratifiedMixture(dist.Normal(loc, log_scale.exp()).to_event(1))
    mix.log_prob(mix.rsample()).sum().backward()
    assert torch.isfinite(loc.grad).all() and (loc.grad != 0).any()


@pytest.mark.parametrize("family", ["normal", "laplace"])
@pytest.mark.parametrize("event", [True, False])
def test_density_integrates_to_one(family, event):
    loc = torch.tensor([-3.0, 0.5, 4.0], dtype=torch.float64)
    scale = torch.tensor([0.4, 1.0, 2.5], dtype=torch.float64)
    family_cls = dist.Normal if family == "normal" else dist.Laplace
    if event:  # K components with event shape (1,)
        mix = StratifiedMixture(family_cls(loc[:, None], scale[:, None]).to_event(1))
        x = torch.linspace(-80, 80, 200_001, dtype=torch.float64)[:, None]
    else:  # scalar components, batch shape (K,), event shape ()
        mix = StratifiedMixture(family_cls(loc, scale))
        x = torch.linspace(-80, 80, 200_001, dtype=torch.float64)
    density = mix.log_prob(x).exp().numpy()
    assert density.shape == (200_001,)
    np.testing.assert_allclose(np.trapezoid(density, x.reshape(-1).numpy()), 1.0, rtol=1e-6)


def test_mean_and_variance_match_numpy():
    rng = np.random.default_rng(1)
    loc, scale = random_experts(rng, (2,), 4, 3)
    logits = rng.normal(size=(2, 4))
    mix = StratifiedMixture(dist.Laplace(T(loc), T(scale)).to_event(1), logits=T(logits))
    w = np.exp(logits - logsumexp(logits, -1, keepdims=True))[..., None]
    mean = (w * loc).sum(-2)
    var = (w * (2 * scale**2 + loc**2)).sum(-2) - mean**2  # Laplace variance 2 b^2
    np.testing.assert_allclose(mix.mean.numpy(), mean, rtol=1e-10)
    np.testing.assert_allclose(mix.variance.numpy(), var, rtol=1e-10)
    np.testing.assert_allclose(mix.stratum_weights.numpy(), np.moveaxis(w[..., 0], -1, 0), rtol=1e-12)


def test_masked_components_get_zero_weight_and_expand():
    loc = torch.tensor([[0.0], [100.0]], dtype=torch.float64)
    mix = StratifiedMixture(dist.Normal(loc, torch.ones_like(loc)).to_event(1),
                            mask=torch.tensor([True, False]))
    x = torch.tensor([[0.3], [100.0]], dtype=torch.float64)
    ref = scipy.stats.norm.logpdf(x.numpy()[:, 0], 0.0, 1.0)  # component 1 contributes nothing
    np.testing.assert_allclose(mix.log_prob(x).numpy(), ref, rtol=1e-12)
    torch.testing.assert_close(mix.stratum_weights, torch.tensor([1.0, 0.0], dtype=torch.float64))
    big = mix.expand((5,))
    assert big.batch_shape == (5,) and big.rsample((2,)).shape == (2, 2, 5, 1)
    torch.testing.assert_close(big.log_prob(x[:, None]), mix.log_prob(x)[:, None].expand(2, 5))


def test_stratified_mixture_errors():
    normal = dist.Normal(torch.zeros(3, 2), torch.ones(3, 2)).to_event(1)  # K=3, L=2
    with pytest.raises(ValueError, match="batch dimension"):
        StratifiedMixture(dist.Normal(torch.zeros(2), torch.ones(2)).to_event(1))
    with pytest.raises(ValueError, match="reparameterisable"):
        StratifiedMixture(dist.Bernoulli(torch.full((3,), 0.5)))
    with pytest.raises(ValueError, match="torch distribution"):
        StratifiedMixture(torch.zeros(3))
    with pytest.raises(ValueError, match="K=3"):
        StratifiedMixture(normal, logits=torch.zeros(4))
    with pytest.raises(ValueError, match="K=3"):
        StratifiedMixture(normal, mask=torch.ones(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        StratifiedMixture(normal, mask=torch.ones(3))
    with pytest.raises(ValueError, match="NaN"):
        StratifiedMixture(normal, logits=torch.tensor([0.0, float("nan"), 0.0]))
    with pytest.raises(ValueError, match="masked out"):
        StratifiedMixture(normal, mask=torch.zeros(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="do not broadcast"):
        StratifiedMixture(dist.Normal(torch.zeros(2, 3, 1), 1.0).to_event(1), logits=torch.zeros(4, 3))
    mix = StratifiedMixture(dist.Normal(torch.zeros(4, 3, 2), 1.0).to_event(1))  # batch (4,)
    with pytest.raises(ValueError, match="event shape"):
        mix.log_prob(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="do not broadcast"):
        mix.log_prob(torch.zeros(5, 2))


# ---------------------------------------------------------------------------------------------
# Subsets
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("m", [1, 2, 3, 4, 6])
def test_nonempty_subsets_count_uniqueness_order(m):
    subsets = nonempty_subsets(m)
    assert len(subsets) == 2**m - 1 == len(set(subsets))
    assert all(s == tuple(sorted(s)) and len(s) >= 1 and set(s) <= set(range(m)) for s in subsets)
    assert subsets == sorted(subsets, key=lambda s: (len(s), s))  # by size, then lexicographic
    assert subsets[:m] == [(i,) for i in range(m)]
    masks = subset_masks(m)
    assert masks.shape == (2**m - 1, m) and masks.dtype == torch.bool
    assert [tuple(np.flatnonzero(row)) for row in masks.numpy()] == subsets


def test_nonempty_subsets_small_case_and_errors():
    assert nonempty_subsets(3) == [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="positive integer"):
            nonempty_subsets(bad)


# ---------------------------------------------------------------------------------------------
# Mixture of products
# ---------------------------------------------------------------------------------------------
@FAST
@given(seed=SEEDS, m=st.integers(1, 4), size=st.integers(1, 3), include_prior=st.booleans(),
       masked=st.booleans())
def test_mixture_of_products_matches_separate_products(seed, m, size, include_prior, masked):
    rng = np.random.default_rng(seed)
    batch = 5
    loc, scale = random_experts(rng, (batch,), m, size)
    present = rng.random((batch, m)) < 0.6
    present[np.arange(batch), rng.integers(0, m, batch)] = True
    mask = T(present) if masked else None
    if not masked:
        present[:] = True
    out_loc, out_scale, valid = mixture_of_products(T(loc), T(scale), mask, include_prior)
    n_sub = 2**m - 1
    assert out_loc.shape == out_scale.shape == (batch, n_sub, size) and valid.shape == (batch, n_sub)
    for s, subset in enumerate(nonempty_subsets(m)):
        idx = list(subset)
        for b in range(batch):
            assert bool(valid[b, s]) == all(present[b, i] for i in subset)
            if valid[b, s]:
                ref = np_poe(loc[b, idx], scale[b, idx],
                             prior=(np.zeros(size), np.ones(size)) if include_prior else None)
                np.testing.assert_allclose(out_loc[b, s].numpy(), ref[0], rtol=1e-10, atol=1e-12)
                np.testing.assert_allclose(out_scale[b, s].numpy(), ref[1], rtol=1e-10)
            else:  # the documented placeholder N(0, I)
                assert (out_loc[b, s] == 0).all() and (out_scale[b, s] == 1).all()
    # and the same product through the public PoE, subset by subset
    for s, subset in enumerate(nonempty_subsets(m)):
        if valid[:, s].all():
            ref = product_of_gaussian_experts(T(loc[:, list(subset)]), T(scale[:, list(subset)]),
                                              include_prior=include_prior)
            torch.testing.assert_close(out_loc[:, s], ref[0])
            torch.testing.assert_close(out_scale[:, s], ref[1])


def test_mixture_of_products_feeds_a_masked_stratified_mixture():
    rng = np.random.default_rng(3)
    loc, scale = random_experts(rng, (2,), 3, 2)
    present = np.array([[True, False, True], [True, True, True]])
    loc[~present] = np.nan  # a missing modality's encoder output
    loc_t = T(loc).requires_grad_()
    out_loc, out_scale, valid = mixture_of_products(loc_t, T(scale), T(present))
    mix = StratifiedMixture(dist.Normal(out_loc, out_scale).to_event(1), mask=valid)
    z = mix.rsample((3,))  # (3, S=7, B=2, L=2)
    assert z.shape == (3, 7, 2, 2) and torch.isfinite(z).all()
    lp = mix.log_prob(z)
    # reference: equal weights over the valid subsets only, products written out in numpy
    for b in range(2):
        subsets = [s for s in nonempty_subsets(3) if all(present[b, list(s)])]
        params = [np_poe(loc[b, list(s)], scale[b, list(s)]) for s in subsets]
        for idx in np.ndindex(3, 7):
            x = z[idx + (b,)].detach().numpy()
            per = [scipy.stats.norm.logpdf(x, mu, sd).sum() for mu, sd in params]
            np.testing.assert_allclose(lp[idx + (b,)].item(), logsumexp(per) - np.log(len(subsets)),
                                       rtol=1e-10)
    # a stratified objective weighted by stratum_weights has finite gradients despite the NaNs
    (mix.stratum_weights * lp).sum().backward()
    assert torch.isfinite(loc_t.grad).all() and (loc_t.grad[T(~present)] == 0).all()


def test_mixture_of_products_errors():
    loc, scale = torch.zeros(2, 3, 2), torch.ones(2, 3, 2)
    with pytest.raises(ValueError, match="no present expert"):
        mixture_of_products(loc, scale, torch.tensor([[True, False, False], [False] * 3]),
                            include_prior=True)
    with pytest.raises(ValueError, match="do not broadcast"):
        mixture_of_products(loc, torch.ones(2, 4, 2))
    with pytest.raises(ValueError, match="scale"):
        mixture_of_products(loc, torch.zeros(2, 3, 2))
