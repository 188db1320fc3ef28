"""The GMRF's subset-posterior ELBO terms (``SubsetELBO(score="all")``, ``GMRFConfig.
subset_posteriors``) against a closed form: on a linear-Gaussian GMRF model each term is
``E_q[log p(x | z)] - KL(q || p)`` with ``q = q(z_A | x_A) p(z_B | z_A)`` and the likelihood of
every component, which is exact for linear decoders; and it bounds ``log p(x)`` from below."""

import math

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from scipy.stats import multivariate_normal

from helpers import affine_decoder
from pyro_mcvae.infer import seed_everything
from pyro_mcvae.infer.objectives import SubsetELBO, make_objective, objective_for
from pyro_mcvae.models import build_model
from pyro_mcvae.models.layouts import subset_rows

M, D, NOISE = 3, 2, 0.3


def linear_gmrf():
    seed_everything(0)
    model = build_model("gmrf", [D] * M, hidden=(), likelihood="normal", scale=NOISE, block_dim=2,
                        subset_posteriors=1).double()
    with torch.no_grad():
        model.prior.offdiag.normal_(0, 0.5)
        model.prior.loc.normal_(0, 0.5)
    return model


def closed_form_term(model, x, subset):
    """``E_q[log p(x | z)] - KL(q || p)`` for one datum ``x`` ``(M, D)``, ``q`` the guide's law
    given the components in ``subset`` (read from its trace), every component scored."""
    present = torch.zeros(1, M, dtype=torch.bool)
    present[0, list(subset)] = True
    q = poutine.trace(model.guide).get_trace(x.unsqueeze(0), mask=present).nodes["z"]["fn"]
    loc, cov = q.mean[0], q.covariance_matrix[0]
    c, w = affine_decoder(model, M * 2)
    flat = x.reshape(-1)
    mean = c + w @ loc
    expected = (-0.5 * ((flat - mean) ** 2).sum() / NOISE**2 - 0.5 * torch.trace(w @ cov @ w.T) / NOISE**2
                - 0.5 * flat.numel() * math.log(2 * math.pi * NOISE**2))
    p = model.prior()
    kl = torch.distributions.kl_divergence(torch.distributions.MultivariateNormal(loc, cov),
                                           torch.distributions.MultivariateNormal(p.mean, p.covariance_matrix))
    return float((expected - kl).detach())


def exact_log_evidence(model, x):
    c, w = affine_decoder(model, M * 2)
    p = model.prior()
    cov = w @ p.covariance_matrix @ w.T + NOISE**2 * torch.eye(M * D, dtype=torch.float64)
    return multivariate_normal((c + w @ p.mean).detach().numpy(), cov.detach().numpy()).logpdf(x.reshape(-1).numpy())


def loss_estimates(objective, model, x, copies, seed=200, repeats=20):
    """``repeats`` seeded estimates of the objective per datum (one draw per copy of ``x``:
    the loss sums them), and their standard error."""
    estimates = []
    with torch.no_grad():
        for i in range(repeats):
            pyro.set_rng_seed(seed + i)
            estimates.append(-objective.loss(model.model, model.guide, x.expand(copies, M, D).clone()) / copies)
    estimates = np.array(estimates)
    return estimates, estimates.std(ddof=1) / math.sqrt(repeats)


@pytest.mark.parametrize("subset", [(0,), (1, 2), (0, 1, 2)])
def test_subset_posterior_term_matches_its_closed_form_and_bounds_the_evidence(subset):
    model = linear_gmrf()
    x = torch.randn(M, D, dtype=torch.float64)
    rows = torch.zeros(1, M, dtype=torch.bool)
    rows[0, list(subset)] = True
    objective = SubsetELBO(make_objective("meanfield"), rows, score="all")
    copies = 1000
    estimates, se = loss_estimates(objective, model, x, copies, seed=100)
    exact = closed_form_term(model, x, subset)
    assert abs(estimates.mean() - exact) < 4 * se + 1e-9, (estimates.mean(), exact, se)
    assert exact <= exact_log_evidence(model, x) + 1e-9
    if len(subset) < M:  # the absent components are scored, at blocks drawn from the prior's conditional
        subset_only = SubsetELBO(make_objective("meanfield"), rows, score="subset")
        pyro.set_rng_seed(7)
        assert -subset_only.loss(model.model, model.guide, x.expand(copies, M, D).clone()) / copies > exact


def test_subset_terms_train_the_decoders_of_the_absent_components():
    """With only component 0 given to the guide, the decoder of component 2 gets a gradient
    from the "all" term and none from the sub-sampled ("subset") one."""
    model = linear_gmrf()
    x = torch.randn(8, M, D, dtype=torch.float64)
    rows = torch.tensor([[True, False, False]])
    params = list(model.decoder.parameters())  # grouped over components: index 2 is component 2's
    assert all(p.shape[0] == M for p in params)
    for score, moves in (("all", True), ("subset", False)):
        model.zero_grad()
        SubsetELBO(make_objective("meanfield"), rows, score=score).differentiable_loss(
            model.model, model.guide, x).backward()
        assert all(p.grad is not None for p in params)
        assert bool(any(p.grad[2].abs().sum() > 0 for p in params)) == moves, score
        assert all(bool(p.grad[0].abs().sum() > 0) for p in params)  # the given component's own decoder


def test_the_registry_builds_the_objective_with_random_subsets():
    model = build_model("gmrf", [D] * M, block_dim=2, subset_posteriors=2)
    objective = objective_for(model)
    assert isinstance(objective, SubsetELBO) and objective.score == "all"
    rows = objective.terms()
    assert rows.shape == (3, M) and bool(rows[0].all()) and not bool(rows[1:].all(-1).any())
    assert not isinstance(objective_for(build_model("gmrf", [D] * M, block_dim=2)), SubsetELBO)
    with pytest.raises(ValueError, match="subset_posteriors"):
        build_model("gmrf", [D] * M, block_dim=2, subset_posteriors=-1)
    with pytest.raises(ValueError, match="score"):
        SubsetELBO(make_objective("meanfield"), rows, score="joint")


def test_subset_singles_add_one_term_per_component_given_alone():
    """``subset_singles``: the whole tuple's term and one term per component given alone, every
    step; the loss estimates minus the sum of their closed forms (in standard errors)."""
    model = build_model("gmrf", [D] * M, hidden=(), likelihood="normal", scale=NOISE, block_dim=2,
                        subset_singles=True).double()
    seed_everything(0)
    with torch.no_grad():
        model.prior.offdiag.normal_(0, 0.5)
        model.prior.loc.normal_(0, 0.5)
    objective = objective_for(model)
    assert objective.num_random == 0
    assert torch.equal(objective.terms(), torch.cat([torch.ones(1, M, dtype=torch.bool), torch.eye(M, dtype=torch.bool)]))
    x = torch.randn(M, D, dtype=torch.float64)
    estimates, se = loss_estimates(objective, model, x, copies=500)
    exact = sum(closed_form_term(model, x, s) for s in [tuple(range(M))] + [(k,) for k in range(M)])
    assert abs(estimates.mean() - exact) < 4 * se + 1e-9, (estimates.mean(), exact, se)
    with_random = objective_for(build_model("gmrf", [D] * M, block_dim=2, subset_singles=True, subset_posteriors=2))
    assert with_random.terms().shape == (1 + M + 2, M)


def test_subset_max_size_restricts_the_random_subsets():
    model = build_model("gmrf", [D] * M, block_dim=2, subset_posteriors=4, subset_max_size=1)
    objective = objective_for(model)
    assert objective.pool.shape == (M, M) and bool((objective.pool.sum(-1) == 1).all())
    torch.manual_seed(0)
    rows = objective.terms()
    assert rows.shape == (5, M) and bool(rows[0].all()) and bool((rows[1:].sum(-1) == 1).all())
    full = objective_for(build_model("gmrf", [D] * M, block_dim=2, subset_posteriors=1))
    assert full.pool.shape == (2**M - 2, M)
    for bad in (0, M, True, 1.0):
        with pytest.raises(ValueError, match="subset_max_size"):
            build_model("gmrf", [D] * M, block_dim=2, subset_posteriors=1, subset_max_size=bad)


def test_per_example_subsets_draw_one_subset_per_datum_with_the_same_expectation():
    """``per_example=True``: each datum of a random term draws its own subset (uniform over the
    pool), so the term's expectation is the mean of the closed-form terms over the pool, the
    same as with one subset per batch."""
    model = linear_gmrf()
    pool = torch.eye(M, dtype=torch.bool)  # one given component
    objective = SubsetELBO(make_objective("meanfield"), torch.ones(0, M, dtype=torch.bool), num_random=1,
                           pool=pool, score="all", per_example=True)
    torch.manual_seed(0)
    rows = objective.terms(batch=3000)
    assert rows.shape == (1, 3000, M) and bool((rows.sum(-1) == 1).all())
    counts = rows[0].sum(0).double()
    assert bool(((counts - 1000).abs() < 4 * (3000 * (1 / 3) * (2 / 3)) ** 0.5).all()), counts
    x = torch.randn(M, D, dtype=torch.float64)
    estimates, se = loss_estimates(objective, model, x, copies=1000)
    exact = np.mean([closed_form_term(model, x, (k,)) for k in range(M)])
    assert abs(estimates.mean() - exact) < 4 * se + 1e-9, (estimates.mean(), exact, se)
    # the registry passes the GMRF's setting through
    built = objective_for(build_model("gmrf", [D] * M, block_dim=2, subset_posteriors=1, subset_per_example=True))
    assert built.per_example and built.terms(batch=5).shape == (2, 5, M)
    assert not objective_for(build_model("gmrf", [D] * M, block_dim=2, subset_posteriors=1)).per_example


@pytest.mark.parametrize("max_size,coupled,missing", [(1, None, False), (None, None, True), (None, 1, False)])
def test_networks_run_once_per_datum_with_the_same_loss_and_gradients(max_size, coupled, missing):
    """The GMRF guide encodes the stacked copies of a batch once (``copies``): the loss and every
    gradient equal those of one network pass per term, for single-component subsets, subsets
    whose global network must read only their present components, coupled coordinates, and data
    with absent components."""
    seed_everything(3)
    model = build_model("gmrf", [D] * M, hidden=(8,), block_dim=2, coupled_dims=coupled, subset_posteriors=3,
                        subset_max_size=max_size, subset_per_example=True).double()
    with torch.no_grad():  # a global network that couples (its last layer starts at zero)
        for p in model.guide.global_net.parameters():
            p.normal_(0, 0.5)
    x = torch.randn(16, M, D, dtype=torch.float64)
    mask = None
    if missing:  # component 0 absent from half the rows; fixed terms that always keep one component
        mask = torch.ones(16, M, dtype=torch.bool)
        mask[::2, 0] = False
        rows = torch.tensor([[True, True, True], [True, True, False], [False, True, True], [True, False, True]])
    seen = []
    hook = model.guide.encoder.register_forward_hook(lambda mod, inp, out: seen.append(out[0].shape[0]))
    results = {}
    for once in (True, False):
        if missing:
            objective = SubsetELBO(make_objective("meanfield"), rows, score="all", encode_once=once)
        else:
            objective = objective_for(model)
            objective.encode_once = once
        seen.clear()
        model.zero_grad()
        pyro.set_rng_seed(11)
        loss = objective.differentiable_loss(model.model, model.guide, x, mask=mask)
        loss.backward()
        results[once] = (loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
                         list(seen))
    hook.remove()
    (loss1, grads1, seen1), (loss0, grads0, seen0) = results[True], results[False]
    assert seen1 == [16] and seen0 == [16 * 4]  # the encoders ran on the batch once, not on 4 copies
    torch.testing.assert_close(loss1, loss0, rtol=1e-12, atol=1e-9)
    assert grads1.keys() == grads0.keys() and any("global_net" in n for n in grads1)
    for name in grads0:
        torch.testing.assert_close(grads1[name], grads0[name], rtol=1e-9, atol=1e-11, msg=name)


@pytest.mark.parametrize("kind", ["meanfield", "dreg"])
@pytest.mark.parametrize("coupled", [None, 1])
def test_networks_once_per_datum_give_the_same_loss_and_gradients(kind, coupled):
    """As the test above, for what it leaves out: DReG besides the mean-field ELBO, and every
    component given alone on data with absent components, so that some stacked rows hold no term
    (a lone component's covariance read from its encoder, void rows masked out); the whole tuple
    and a random subset per datum beside them; float64, couplings in the prior and the posterior."""
    seed_everything(0)
    model = build_model("gmrf", [D] * M, hidden=(8,), block_dim=2, coupled_dims=coupled).double()
    with torch.no_grad():
        model.prior.offdiag.normal_(0, 0.5)
        for p in model.guide.global_net.parameters():
            p.normal_(0, 0.5)
    x = torch.randn(6, M, D, dtype=torch.float64)
    mask = torch.ones(6, M, dtype=torch.bool)
    mask[1, 2] = mask[4, 0] = False
    rows = torch.cat([torch.ones(1, M, dtype=torch.bool), torch.eye(M, dtype=torch.bool)])
    pool = subset_rows(M, max_size=M - 1)
    results = []
    for once in (True, False):
        base = make_objective(kind, num_particles=2 if kind == "dreg" else 1)
        objective = SubsetELBO(base, rows, num_random=1, pool=pool, score="all", per_example=True, encode_once=once)
        model.zero_grad()
        pyro.set_rng_seed(5)
        loss = objective.loss_and_grads(model.model, model.guide, x, mask=mask)
        results.append((loss, [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (loss1, g1), (loss2, g2) = results
    assert loss1 == pytest.approx(loss2, rel=1e-10)
    assert len(g1) == len(g2) > 0
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_a_term_whose_given_component_is_absent_counts_nothing():
    """Every component alone given, on a datum without component 2: the objective is the two
    terms that exist (given 0, given 1), in standard errors, and nothing is drawn for the third."""
    model = linear_gmrf()
    x = torch.randn(M, D, dtype=torch.float64)
    copies = 400
    mask = torch.tensor([True, True, False]).expand(copies, M)
    singles = SubsetELBO(make_objective("meanfield"), torch.eye(M, dtype=torch.bool), score="all")
    existing = SubsetELBO(make_objective("meanfield"), torch.eye(M, dtype=torch.bool)[:2], score="all")
    means = []
    for objective in (singles, existing):
        values = []
        with torch.no_grad():
            for i in range(20):
                pyro.set_rng_seed(300 + i)
                values.append(-objective.loss(model.model, model.guide, x.expand(copies, M, D).clone(), mask=mask) / copies)
        means.append((np.mean(values), np.std(values, ddof=1) / math.sqrt(len(values))))
    (a, se_a), (b, se_b) = means
    assert abs(a - b) < 4 * math.hypot(se_a, se_b), (a, b, se_a, se_b)
    assert np.isfinite(a)
