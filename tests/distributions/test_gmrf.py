"""Tests for the GMRF distribution: conditioning, marginals and log densities against dense
numpy / scipy computations in float64."""

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyro_mcvae.covariance import assemble_block_covariance
from pyro_mcvae.distributions import GMRF

from helpers import SEEDS, make_gmrf, random_gmrf, random_spd

FAST = settings(max_examples=50, deadline=None)
ROUTES = ("covariance", "precision", "scale_tril")


# ---------------------------------------------------------------------------------------------
# Helpers (numpy, float64)
# ---------------------------------------------------------------------------------------------
def flat_idx(comps, d):
    return np.array([k * d + p for k in comps for p in range(d)], dtype=int)


def np_condition(mu, cov, a_idx, b_idx, z_a):
    """Dense Gaussian conditioning of one (mu, cov) on z_a."""
    s_aa = cov[np.ix_(a_idx, a_idx)]
    s_ba = cov[np.ix_(b_idx, a_idx)]
    s_bb = cov[np.ix_(b_idx, b_idx)]
    loc = mu[b_idx] + s_ba @ np.linalg.solve(s_aa, z_a - mu[a_idx])
    c = s_bb - s_ba @ np.linalg.solve(s_aa, s_ba.T)
    return loc, c


@st.composite
def subset_case(draw):
    m = draw(st.integers(2, 5))
    d = draw(st.integers(1, 3))
    mask = draw(
        st.lists(st.booleans(), min_size=m, max_size=m).filter(lambda x: 0 < sum(x) < len(x))
    )
    observed = [k for k in range(m) if mask[k]]
    order = draw(st.permutations(observed))  # dict insertion order should not matter
    route = draw(st.sampled_from(ROUTES))
    batch = draw(st.sampled_from([(), (2,)]))
    samples = draw(st.sampled_from([(), (3,)]))
    seed = draw(SEEDS)
    return m, d, list(order), route, batch, samples, seed


# ---------------------------------------------------------------------------------------------
# Conditioning
# ---------------------------------------------------------------------------------------------
@FAST
@given(subset_case())
def test_condition_matches_dense_numpy(case):
    m, d, observed, route, batch, samples, seed = case
    rng = np.random.default_rng(seed)
    n = m * d
    mu, cov, g = random_gmrf(rng, route, m, d, batch, loc_scale=3.0)
    assert g.batch_shape == batch and g.event_shape == (n,)

    values = {k: rng.standard_normal((*samples, *batch, d)) * 2 for k in observed}
    cond = g.condition({k: torch.as_tensor(v) for k, v in values.items()})

    a_comps = sorted(observed)
    b_comps = [k for k in range(m) if k not in observed]
    a_idx, b_idx = flat_idx(a_comps, d), flat_idx(b_comps, d)
    nb = len(b_idx)
    assert isinstance(cond, GMRF)
    assert cond.num_components == len(b_comps) and cond.component_dim == d
    assert cond.loc.shape == (*samples, *batch, nb)
    assert cond.batch_shape == (*samples, *batch)

    loc = cond.loc.detach().numpy()
    cc = cond.covariance_matrix.detach().numpy()
    for s_idx in np.ndindex(*samples):
        for b in np.ndindex(*batch):
            z_a = np.concatenate([values[k][s_idx + b] for k in a_comps])
            ref_loc, ref_cov = np_condition(mu[b], cov[b], a_idx, b_idx, z_a)
            np.testing.assert_allclose(loc[s_idx + b], ref_loc, rtol=1e-8, atol=1e-8)
            np.testing.assert_allclose(cc[s_idx + b], ref_cov, rtol=1e-8, atol=1e-8 * np.abs(ref_cov).max())


@settings(max_examples=30, deadline=None)
@given(
    m=st.integers(3, 5),
    d=st.integers(1, 3),
    route=st.sampled_from(ROUTES),
    data=st.data(),
    seed=SEEDS,
)
def test_conditioning_twice_equals_conditioning_once(m, d, route, data, seed):
    """Condition on A, then on C (indices renumbered among the remaining components), equals
    conditioning on A and C at once; exercises the conditional GMRF's own route."""
    rng = np.random.default_rng(seed)
    mu, cov, g = random_gmrf(rng, route, m, d, (2,))
    perm = data.draw(st.permutations(range(m)))
    k_a = data.draw(st.integers(1, m - 2))
    k_c = data.draw(st.integers(1, m - k_a - 1))
    a, c = sorted(perm[:k_a]), sorted(perm[k_a:k_a + k_c])
    vals = {k: torch.as_tensor(rng.standard_normal((3, 2, d))) for k in a + c}
    rest = [k for k in range(m) if k not in a]
    step = g.condition({k: vals[k] for k in a}).condition({rest.index(k): vals[k] for k in c})
    once = g.condition(vals)
    torch.testing.assert_close(step.loc, once.loc, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(step.covariance_matrix, once.covariance_matrix, rtol=1e-8, atol=1e-8)


def test_condition_remaining_components_in_increasing_order():
    """Block structure makes the output order checkable: with a block-diagonal covariance the
    conditional of component k is its own marginal, so loc blocks identify components."""
    m, d = 5, 2
    loc = torch.arange(m * d, dtype=torch.float64)
    cov = torch.eye(m * d, dtype=torch.float64) * (1 + torch.arange(m * d, dtype=torch.float64))
    for route in ROUTES:
        g = make_gmrf(route, loc.numpy(), cov.numpy(), m, d)
        cond = g.condition({3: torch.zeros(d), 0: torch.zeros(d)})
        torch.testing.assert_close(cond.loc, loc[flat_idx([1, 2, 4], d)])
        torch.testing.assert_close(cond.covariance_matrix, cov[np.ix_(flat_idx([1, 2, 4], d), flat_idx([1, 2, 4], d))])


def test_condition_accepts_numpy_and_tensor_keys_and_values():
    rng = np.random.default_rng(0)
    m, d = 3, 2
    mu, cov, g = random_gmrf(rng, "covariance", m, d)
    v = rng.standard_normal(d)
    ref = g.condition({1: torch.as_tensor(v)})
    for key in (np.int64(1), torch.tensor(1)):
        out = g.condition({key: v.tolist()})
        torch.testing.assert_close(out.loc, ref.loc)
        torch.testing.assert_close(out.covariance_matrix, ref.covariance_matrix)


def test_condition_float32_observed_on_float64_gmrf():
    rng = np.random.default_rng(3)
    m, d = 3, 2
    mu, cov, g = random_gmrf(rng, "precision", m, d)
    v = torch.randn(4, d)
    out = g.condition({2: v})
    assert out.loc.dtype == torch.float64
    torch.testing.assert_close(out.loc, g.condition({2: v.double()}).loc)


# ---------------------------------------------------------------------------------------------
# Marginals and log densities
# ---------------------------------------------------------------------------------------------
@FAST
@given(subset_case())
def test_marginal_log_prob_and_chain_rule(case):
    m, d, observed, route, batch, _, seed = case
    rng = np.random.default_rng(seed)
    n = m * d
    mu, cov, g = random_gmrf(rng, route, m, d, batch)
    a_comps = sorted(observed)
    b_comps = [k for k in range(m) if k not in observed]
    a_idx, b_idx = flat_idx(a_comps, d), flat_idx(b_comps, d)

    marg = g.marginal(observed)  # unsorted input; comes out in increasing order
    assert marg.num_components == len(a_comps) and marg.component_dim == d
    np.testing.assert_allclose(marg.loc.numpy(), mu[..., a_idx], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        marg.covariance_matrix.numpy(), cov[..., a_idx[:, None], a_idx[None, :]], rtol=1e-8, atol=1e-10
    )

    z = rng.standard_normal((4, *batch, n)) * 2 + mu
    lp = g.log_prob(torch.as_tensor(z)).numpy()
    assert lp.shape == (4, *batch)
    for s in range(4):
        for b in np.ndindex(*batch):
            ref = scipy.stats.multivariate_normal.logpdf(z[(s, *b)], mu[b], cov[b])
            np.testing.assert_allclose(lp[(s, *b)], ref, rtol=1e-9, atol=1e-9)

    # log p(z) = log p(z_A) + log p(z_B | z_A), with z_A carrying the sample dimension
    z_t = torch.as_tensor(z)
    cond = g.condition({k: z_t[..., k * d:(k + 1) * d] for k in observed})
    total = marg.log_prob(z_t[..., a_idx]) + cond.log_prob(z_t[..., b_idx])
    np.testing.assert_allclose(total.numpy(), lp, rtol=1e-8, atol=1e-8)


def test_marginal_of_single_component_and_all():
    rng = np.random.default_rng(5)
    m, d = 4, 2
    mu, cov = rng.standard_normal(m * d), random_spd(rng, m * d)
    for route in ROUTES:
        g = make_gmrf(route, mu, cov, m, d)
        one = g.marginal([2])
        np.testing.assert_allclose(one.covariance_matrix.numpy(), cov[4:6, 4:6], rtol=1e-9)
        full = g.marginal(range(m))
        np.testing.assert_allclose(full.covariance_matrix.numpy(), cov, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# expand and from_blocks
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("route", ROUTES)
def test_expand_keeps_structure_and_conditions(route):
    rng = np.random.default_rng(7)
    m, d = 3, 2
    mu, cov, g = random_gmrf(rng, route, m, d)
    e = g.expand((4,))
    assert isinstance(e, GMRF)
    assert e.batch_shape == (4,) and e.event_shape == (m * d,)
    assert e.num_components == m and e.component_dim == d
    assert e.loc_blocks.shape == (4, m, d)
    v = rng.standard_normal((5, 4, d))
    cond = e.condition({1: torch.as_tensor(v)})
    assert cond.loc.shape == (5, 4, 2 * d)
    a_idx, b_idx = flat_idx([1], d), flat_idx([0, 2], d)
    for s in range(5):
        for b in range(4):
            ref_loc, ref_cov = np_condition(mu, cov, a_idx, b_idx, v[s, b])
            np.testing.assert_allclose(cond.loc[s, b].numpy(), ref_loc, rtol=1e-8, atol=1e-8)
            np.testing.assert_allclose(cond.covariance_matrix[s, b].numpy(), ref_cov, rtol=1e-8, atol=1e-8)
    # expanding again (batched to more dims) and marginalising
    e2 = e.expand((2, 4))
    assert e2.num_components == m and e2.marginal([0, 2]).batch_shape == (2, 4)
    np.testing.assert_allclose(
        e2.marginal([0, 2]).covariance_matrix[1, 3].numpy(), cov[np.ix_(b_idx, b_idx)], rtol=1e-9
    )


@pytest.mark.parametrize("param", ["precision", "covariance"])
@pytest.mark.parametrize("mode", ["blockwise", "elementwise"])
def test_from_blocks(param, mode):
    rng = np.random.default_rng(11)
    m, d = 3, 2
    loc = torch.as_tensor(rng.standard_normal((2, m, d)))
    diag = torch.as_tensor(10 ** rng.uniform(-1, 1, size=(2, m, d)))
    off = torch.as_tensor(rng.standard_normal((2, m, m, d, d)))
    g = GMRF.from_blocks(loc, diag, off, parameterization=param, mode=mode, eps=0.8)
    mat = assemble_block_covariance(diag, off, mode=mode, eps=0.8)
    assert g.num_components == m and g.component_dim == d and g.batch_shape == (2,)
    torch.testing.assert_close(g.loc, loc.reshape(2, m * d), rtol=0, atol=0)
    if param == "precision":
        assert torch.equal(g.precision_matrix, mat)
        np.testing.assert_allclose(
            g.covariance_matrix.numpy(), np.linalg.inv(mat.numpy()), rtol=1e-8, atol=1e-10
        )
    else:
        assert torch.equal(g.covariance_matrix, mat)
    with pytest.raises(ValueError):
        GMRF.from_blocks(loc, diag, off, parameterization="cholesky")


def test_loc_given_as_blocks():
    rng = np.random.default_rng(2)
    m, d = 3, 2
    cov = torch.as_tensor(random_spd(rng, m * d))
    loc = torch.as_tensor(rng.standard_normal((m, d)))
    g = GMRF(loc, covariance_matrix=cov, num_components=m)
    assert g.component_dim == d and g.batch_shape == ()
    torch.testing.assert_close(g.loc, loc.reshape(-1))
    torch.testing.assert_close(g.loc_blocks, loc)


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------
@pytest.fixture(params=ROUTES)
def g3(request):
    rng = np.random.default_rng(0)
    m, d = 3, 2
    return random_gmrf(rng, request.param, m, d)[2]


def test_bad_component_indices(g3):
    v = torch.zeros(2)
    for comps in ([3], [-1], [0, 0], [7, 1], []):
        with pytest.raises(ValueError):
            g3.marginal(comps)
    for obs in ({3: v}, {-1: v}, {0: v, torch.tensor(0): v}, {"a": v}, {None: v}):
        with pytest.raises(ValueError):
            g3.condition(obs)


def test_observing_everything_or_nothing(g3):
    v = torch.zeros(2)
    with pytest.raises(ValueError):
        g3.condition({0: v, 1: v, 2: v})
    with pytest.raises(ValueError):
        g3.condition({})
    with pytest.raises(ValueError):
        g3.condition([(0, v)])


def test_bad_observed_values(g3):
    for bad in (torch.zeros(3), torch.zeros(4, 1), torch.tensor(0.0), torch.zeros(2, 3)):
        with pytest.raises(ValueError):
            g3.condition({1: bad})
    for x in (float("nan"), float("inf")):
        v = torch.zeros(5, 2)
        v[3, 1] = x
        with pytest.raises(ValueError):
            g3.condition({1: v})


def test_bad_construction():
    cov = torch.eye(6, dtype=torch.float64)
    with pytest.raises(ValueError):  # 6 does not split into 4 blocks
        GMRF(torch.zeros(6, dtype=torch.float64), covariance_matrix=cov, num_components=4)
    with pytest.raises(ValueError):  # 3 * 3 != 6
        GMRF(torch.zeros(6, dtype=torch.float64), covariance_matrix=cov, num_components=3, component_dim=3)
    for loc in (torch.zeros(5), torch.zeros(7), torch.zeros(2, 2), torch.zeros(4, 3, 1)):
        with pytest.raises(ValueError):
            GMRF(loc.double(), covariance_matrix=cov, num_components=3)
    for m in (0, -1, 1.5, "3"):
        with pytest.raises(ValueError):
            GMRF(torch.zeros(6, dtype=torch.float64), covariance_matrix=cov, num_components=m)
    with pytest.raises(ValueError):
        GMRF(torch.zeros(6, dtype=torch.float64), num_components=3)


def test_non_integer_component_index_is_rejected(g3):
    with pytest.raises(ValueError):
        g3.marginal([1.5])
