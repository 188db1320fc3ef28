"""MVAE: product-of-experts guide over a shared latent, sub-sampled ELBO, masks, generation."""

import numpy as np
import pyro
import pytest
import torch
from pyro_mcvae.infer.objectives import MeanFieldELBO

from pyro_mcvae import MCVAE, TrainConfig, fit
from pyro_mcvae.infer import seed_everything
from pyro_mcvae.infer.objectives import SubsetELBO, objective_for


def mvae(dims=(2, 2, 2), latent=3):
    seed_everything(0)
    return MCVAE.build(list(dims), latent_dim=latent, hidden=(16,), guide="mvae")


def numpy_poe(locs, variances):
    """Closed form written independently: precisions add (with the N(0, 1) prior expert)."""
    prec = 1.0 + sum(1.0 / v for v in variances)
    loc = sum(m / v for m, v in zip(locs, variances)) / prec
    return loc, np.sqrt(1.0 / prec)


def test_posterior_is_the_product_of_present_experts_and_the_prior():
    model = mvae()
    xs = [torch.rand(5, 2, dtype=torch.float64) for _ in range(3)]
    model.double()
    mask = torch.tensor([[True, True, True], [True, False, True], [False, False, True],
                         [True, True, False], [False, True, False]])
    loc, var = model.guide.encode(xs)
    q = model.guide._posterior(xs, mask)
    for b in range(5):
        present = [k for k in range(3) if mask[b, k]]
        want_loc, want_scale = numpy_poe([loc[b, k].detach().numpy() for k in present],
                                         [var[b, k].detach().numpy() for k in present])
        np.testing.assert_allclose(q.mean[b].detach().numpy(), want_loc, rtol=1e-10)
        np.testing.assert_allclose(q.stddev[b].detach().numpy(), want_scale, rtol=1e-10)


def test_subset_elbo_is_the_sum_of_its_terms():
    model = mvae()
    xs = [torch.rand(8, 2) for _ in range(3)]
    subsets = torch.tensor([[True, True, True], [True, False, False], [False, True, False]])
    # The stacked pass draws its own random numbers, so compare expectations (many particles).
    elbo = MeanFieldELBO(num_particles=4000)
    objective = SubsetELBO(elbo, subsets)
    pyro.set_rng_seed(4)
    total = objective.loss(model.model, model.guide, xs, beta=1.0)
    terms = [elbo.loss(model.model, model.guide, xs, beta=1.0, mask=row.expand(8, 3)) for row in subsets]
    assert total == pytest.approx(sum(terms), rel=2e-3)
    assert len(set(round(t, 3) for t in terms)) == 3, "the terms should differ"


def test_absent_component_data_do_not_enter_the_loss():
    model = mvae()
    xs = [torch.rand(6, 2) for _ in range(3)]
    changed = [xs[0], xs[1] + 5.0, xs[2]]
    mask = torch.tensor([[True, False, True]]).expand(6, 3)
    elbo = MeanFieldELBO()

    def loss(data, m):
        pyro.set_rng_seed(1)
        return elbo.loss(model.model, model.guide, data, mask=m)

    assert loss(xs, mask) == pytest.approx(loss(changed, mask), rel=1e-7)
    assert loss(xs, None) != pytest.approx(loss(changed, None), rel=1e-3)


def test_training_with_missing_components_lowers_the_loss(copula_tensor):
    model = MCVAE.build([2] * 4, latent_dim=3, hidden=(16, 16), guide="mvae")
    mask = torch.rand(copula_tensor.shape[0], 4, generator=torch.Generator().manual_seed(0)) > 0.3
    mask[:, 0] |= ~mask.any(-1)  # every sample keeps one component
    result = fit(model, copula_tensor, TrainConfig(epochs=6, batch_size=128, lr=3e-3), progress=False, mask=mask)
    assert result.losses[-1] < result.losses[0] - 1.0, result.losses


def test_conditional_generation_draws_from_the_observed_experts():
    model = mvae()
    xs = [torch.rand(4, 2) for _ in range(3)]
    out = model.condition({0: xs[0], 2: xs[2]}, num_samples=3)
    assert [o.shape for o in out] == [(3, 4, 2)] * 3
    assert torch.equal(out[0][1], xs[0]) and torch.equal(out[2][2], xs[2])
    torch.manual_seed(0)
    with torch.no_grad():
        z = model.guide.conditional_latent(model.prior(), [xs[0], xs[2]], [0, 2], 20000)
        loc, var = model.guide.encode([xs[0], xs[2]], [0, 2])
    want_loc, want_scale = numpy_poe([loc[:, 0].numpy(), loc[:, 1].numpy()],
                                     [var[:, 0].numpy(), var[:, 1].numpy()])
    np.testing.assert_allclose(z.mean(0).numpy(), want_loc, atol=4 * want_scale.max() / np.sqrt(20000) * 3)
    np.testing.assert_allclose(z.std(0).numpy(), want_scale, rtol=0.05)


def test_masks_are_checked():
    model = mvae()
    xs = [torch.rand(4, 2) for _ in range(3)]
    with pytest.raises(ValueError, match="bool"):
        MeanFieldELBO().loss(model.model, model.guide, xs, mask=torch.ones(4, 3))
    with pytest.raises(ValueError, match=r"shape \(batch=4, M=3\)"):
        MeanFieldELBO().loss(model.model, model.guide, xs, mask=torch.ones(4, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="at least one present component"):
        fit(model, torch.rand(8, 3, 2), TrainConfig(epochs=1), progress=False,
            mask=torch.zeros(8, 3, dtype=torch.bool))


class _RecordingELBO:
    """Records the masks the sub-sampled objective passes; its 'loss' counts present entries."""

    def __init__(self):
        self.masks = []

    def loss(self, model, guide, xs, *args, mask=None, **kwargs):
        self.masks.append(mask.clone())
        return float(mask.sum())

    loss_and_grads = loss


def test_random_subset_terms_are_drawn_uniformly_from_the_middle_sizes():
    """MVAE's k random-subset terms: joint + singles + k subsets of 2..M-1 components, drawn afresh
    at every step, uniformly (each of the 2^M - M - 2 candidates within 4 standard errors)."""
    seed_everything(0)
    m, k, batch = 4, 3, 5
    objective = objective_for(MCVAE.build([2] * m, 3, hidden=(8,), guide="mvae", random_subsets=k))
    rec = objective.elbo = _RecordingELBO()
    xs = torch.rand(batch, m, 2)
    counts = {}
    steps = 1500
    for _ in range(steps):
        objective.loss(None, None, xs)
        rows = rec.masks[-1].reshape(-1, batch, m)
        assert rows.shape[0] == 1 + m + k
        assert torch.equal(rows[0], torch.ones(batch, m, dtype=torch.bool))
        assert torch.equal(rows[1:1 + m, 0], torch.eye(m, dtype=torch.bool))
        for row in rows[1 + m:]:
            assert torch.equal(row, row[:1].expand(batch, m)), "one subset per term, shared by the batch"
            size = int(row[0].sum())
            assert 2 <= size <= m - 1
            key = tuple(row[0].tolist())
            counts[key] = counts.get(key, 0) + 1
    candidates = 2**m - m - 2
    assert len(counts) == candidates
    p, n = 1.0 / candidates, steps * k
    for key, c in counts.items():
        assert abs(c - n * p) < 4 * (n * p * (1 - p)) ** 0.5, (key, c, n * p)
    # a caller's mask still removes absent components from every term
    mask = torch.tensor([[True, False, True, True]] * batch)
    objective.loss(None, None, xs, mask=mask)
    assert not bool(rec.masks[-1][:, 1].any())


def test_random_subsets_are_seeded_and_checked():
    picks = []
    for _ in range(2):
        seed_everything(3)
        objective = objective_for(MCVAE.build([2] * 5, 3, hidden=(8,), guide="mvae", random_subsets=2))
        picks.append(objective.terms())
    assert torch.equal(picks[0], picks[1])
    with pytest.raises(ValueError, match="at least 3 components"):
        MCVAE.build([2, 2], 3, guide="mvae", random_subsets=1)
    with pytest.raises(ValueError, match="non-negative integer"):
        MCVAE.build([2, 2, 2], 3, guide="mvae", random_subsets=-1)


def test_mvae_trains_with_random_subset_terms():
    seed_everything(0)
    model = MCVAE.build([2, 2, 2], 3, hidden=(16,), guide="mvae", random_subsets=2)
    data = torch.rand(256, 3, 2)
    result = fit(model, data, TrainConfig(epochs=3, batch_size=64, lr=3e-3), progress=False)
    assert result.steps == 12 and np.isfinite(result.losses).all() and result.losses[-1] < result.losses[0]
