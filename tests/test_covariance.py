"""Tests for the block SPD assembly against an independent numpy implementation."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyro_mcvae.covariance import assemble_block_covariance, assemble_packed, num_offdiag_pairs, spectral_norm

from helpers import SEEDS

FAST = settings(max_examples=60, deadline=None)
MODES = ("blockwise", "elementwise")
TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


# ---------------------------------------------------------------------------------------------
# Independent inputs and references (numpy, float64, written from the formulas)
# ---------------------------------------------------------------------------------------------
def random_graph(rng, m):
    """Random symmetric boolean adjacency with an arbitrary diagonal (the diagonal is unused)."""
    g = rng.random((m, m)) < 0.5
    g = np.triu(g, 1)
    g = g | g.T
    np.fill_diagonal(g, rng.random(m) < 0.5)
    return g


def random_inputs(rng, batch, m, d, full_blocks, var_lo=-3.0, var_hi=3.0, off_exp=0.0):
    """diag ``(*batch, M, d)`` variances or ``(*batch, M, d, d)`` SPD blocks, offdiag
    ``(*batch, M, M, d, d)``, numpy float64.

    Variances (or the block scales) are log-uniform in ``[10**var_lo, 10**var_hi]``; the
    off-diagonal entries are standard normal times ``10**off_exp``.
    """
    if full_blocks:
        a = rng.standard_normal((*batch, m, d, d))
        c = rng.uniform(0.1, 1.0, size=(*batch, m, 1, 1))
        blocks = a @ np.swapaxes(a, -1, -2) / d + c * np.eye(d)
        scale = 10.0 ** rng.uniform(var_lo, var_hi, size=(*batch, m, 1, 1))
        diag = scale * blocks
        diag = 0.5 * (diag + np.swapaxes(diag, -1, -2))  # exactly symmetric
    else:
        diag = 10.0 ** rng.uniform(var_lo, var_hi, size=(*batch, m, d))
    offdiag = rng.standard_normal((*batch, m, m, d, d)) * 10.0**off_exp
    return diag, offdiag


def np_T(offdiag, graph):
    """Symmetric off-diagonal block array T[i, j] (M, M, d, d) from the blocks i < j."""
    m, d = offdiag.shape[0], offdiag.shape[-1]
    t = np.zeros((m, m, d, d))
    for i in range(m):
        for j in range(i + 1, m):
            if graph is None or graph[i, j]:
                t[i, j] = offdiag[i, j]
                t[j, i] = offdiag[i, j].T
    return t


def np_diag_blocks(diag):
    return diag if diag.ndim == 3 else np.stack([np.diag(v) for v in diag])


def np_assemble_one(diag, offdiag, eps, delta, mode, graph):
    """One (unbatched) assembled matrix, written directly from the construction."""
    m, d = offdiag.shape[0], offdiag.shape[-1]
    sii = np_diag_blocks(np.asarray(diag, dtype=np.float64))
    t = np_T(np.asarray(offdiag, dtype=np.float64), graph)
    lam = np.array([np.linalg.eigvalsh(sii[i]).min() for i in range(m)])
    out = np.zeros((m * d, m * d))
    for i in range(m):
        out[i * d:(i + 1) * d, i * d:(i + 1) * d] = sii[i]
    if mode == "blockwise":
        s = np.array(
            [sum(np.linalg.norm(t[i, j], ord=2) for j in range(m) if j != i) + delta for i in range(m)]
        )
        a = np.minimum(1.0, eps * lam / s)
        for i in range(m):
            for j in range(m):
                if i != j:
                    out[i * d:(i + 1) * d, j * d:(j + 1) * d] = np.sqrt(a[i] * a[j]) * t[i, j]
    else:
        # scalar row r = (i, p): sum over the entries of the other components
        s = np.zeros((m, d))
        for i in range(m):
            for p in range(d):
                s[i, p] = sum(abs(t[i, j, p, q]) for j in range(m) if j != i for q in range(d)) + delta
        a = np.minimum(1.0, eps * lam[:, None] / s)
        for i in range(m):
            for j in range(m):
                if i == j:
                    continue
                for p in range(d):
                    for q in range(d):
                        out[i * d + p, j * d + q] = np.sqrt(a[i, p] * a[j, q]) * t[i, j, p, q]
    return out


def np_assemble(diag, offdiag, eps, delta, mode, graph):
    """Batched reference over the leading dimensions of ``offdiag``."""
    batch = offdiag.shape[:-4]
    if not batch:
        return np_assemble_one(diag, offdiag, eps, delta, mode, graph)
    m, d = offdiag.shape[-4], offdiag.shape[-1]
    out = np.zeros((*batch, m * d, m * d))
    for idx in np.ndindex(*batch):
        out[idx] = np_assemble_one(diag[idx], offdiag[idx], eps, delta, mode, graph)
    return out


def get_block(mat, i, j, d):
    return mat[..., i * d:(i + 1) * d, j * d:(j + 1) * d]


def block_layouts(min_m=2, batched=True):
    """Hypothesis keyword strategies of an input layout: ``m`` components in ``[min_m, 5]``, block
    size ``d`` in ``[1, 4]``, ``batch`` shape ``()`` or ``(2,)`` (when ``batched``), ``mode`` and
    ``full`` (full diagonal blocks or variances)."""
    layout = {"m": st.integers(min_m, 5), "d": st.integers(1, 4)}
    if batched:
        layout["batch"] = st.sampled_from([(), (2,)])
    layout.update(mode=st.sampled_from(MODES), full=st.booleans())
    return layout


# ---------------------------------------------------------------------------------------------
# SPD under adversarial inputs
# ---------------------------------------------------------------------------------------------
@st.composite
def adversarial_case(draw):
    m = draw(st.integers(1, 5))
    d = draw(st.integers(1, 4))
    batch = draw(st.sampled_from([(), (2,)]))
    mode = draw(st.sampled_from(MODES))
    full = draw(st.booleans())
    dtype = draw(st.sampled_from(["float32", "float64"]))
    var_lo = draw(st.floats(-3.0, 3.0))
    var_hi = draw(st.floats(var_lo, 3.0))
    off_exp = draw(st.sampled_from([-8.0, -4.0, -1.0, 0.0, 1.0, 4.0, 8.0]) | st.floats(-8.0, 8.0))
    eps = draw(st.sampled_from([0.5, 0.9, 0.99]) | st.floats(0.01, 0.999))
    use_graph = draw(st.booleans())
    seed = draw(SEEDS)
    return m, d, batch, mode, full, dtype, var_lo, var_hi, off_exp, eps, use_graph, seed


@FAST
@given(adversarial_case())
def test_assembled_matrix_is_spd_with_exact_diagonal_blocks(case):
    m, d, batch, mode, full, dtype, var_lo, var_hi, off_exp, eps, use_graph, seed = case
    rng = np.random.default_rng(seed)
    diag_np, off_np = random_inputs(rng, batch, m, d, full, var_lo, var_hi, off_exp)
    graph = torch.as_tensor(random_graph(rng, m)) if use_graph else None
    tdtype = TORCH_DTYPES[dtype]
    diag = torch.as_tensor(diag_np, dtype=tdtype)
    off = torch.as_tensor(off_np, dtype=tdtype)
    out = assemble_block_covariance(diag, off, eps=eps, mode=mode, graph=graph)

    assert out.shape == (*batch, m * d, m * d)
    assert out.dtype == tdtype
    assert torch.isfinite(out).all()
    assert torch.equal(out, out.transpose(-1, -2)), "not exactly symmetric"
    eig = np.linalg.eigvalsh(out.detach().numpy().astype(np.float64))
    assert (eig[..., 0] > 0).all(), f"smallest eigenvalue {eig[..., 0].min()}"
    torch.linalg.cholesky(out)  # in the output's own dtype; raises if not PD numerically
    expected_blocks = diag if full else torch.diag_embed(diag)
    for i in range(m):
        assert torch.equal(get_block(out, i, i, d), expected_blocks[..., i, :, :])
    if graph is not None:
        for i in range(m):
            for j in range(m):
                if i != j and not bool(graph[i, j]):
                    assert (get_block(out, i, j, d) == 0).all()


@settings(max_examples=40, deadline=None)
@given(
    **block_layouts(),
    off_exp=st.floats(-3.0, 3.0),
    eps=st.floats(0.05, 0.99),
    delta=st.sampled_from([1e-6, 1e-3, 1.0]),
    use_graph=st.booleans(),
    seed=SEEDS,
)
def test_matches_numpy_reference(m, d, batch, mode, full, off_exp, eps, delta, use_graph, seed):
    rng = np.random.default_rng(seed)
    diag_np, off_np = random_inputs(rng, batch, m, d, full, -2.0, 2.0, off_exp)
    graph_np = random_graph(rng, m) if use_graph else None
    graph = None if graph_np is None else torch.as_tensor(graph_np)
    out = assemble_block_covariance(
        torch.as_tensor(diag_np), torch.as_tensor(off_np), eps=eps, delta=delta, mode=mode, graph=graph
    )
    ref = np_assemble(diag_np, off_np, eps, delta, mode, graph_np)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-10, atol=1e-300)


def test_reference_hand_checked_example():
    """A 2x2 case worked by hand: d=1, variances 1 and 4, T_01 = 10, eps=0.5, delta tiny."""
    diag = torch.tensor([[1.0], [4.0]], dtype=torch.float64)
    off = torch.zeros(2, 2, 1, 1, dtype=torch.float64)
    off[0, 1] = 10.0
    for mode in MODES:
        out = assemble_block_covariance(diag, off, eps=0.5, delta=1e-12, mode=mode)
        # a_0 = 0.5 * 1 / 10 = 0.05, a_1 = 0.5 * 4 / 10 = 0.2, S_01 = sqrt(0.01) * 10 = 1
        expected = torch.tensor([[1.0, 1.0], [1.0, 4.0]], dtype=torch.float64)
        torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------------------------------------
# Structure: only i < j used, graph zeros, no scaling when coupling is weak
# ---------------------------------------------------------------------------------------------
def structure_case(min_m, off_exp):
    """Run the decorated test on 40 hypothesis cases: ``m`` in ``[min_m, 5]``, ``d`` in ``[1, 4]``,
    every mode, variances or full diagonal blocks. The test receives ``(m, d, mode, full, rng,
    diag_np, off_np)``: unbatched :func:`random_inputs` (diagonal scales in ``[0.1, 10]``,
    off-diagonal entries times ``10**off_exp``) and the generator that drew them."""

    def decorate(test):
        @settings(max_examples=40, deadline=None)
        @given(**block_layouts(min_m, batched=False), seed=SEEDS)
        def wrapped(m, d, mode, full, seed):
            rng = np.random.default_rng(seed)
            diag_np, off_np = random_inputs(rng, (), m, d, full, -1.0, 1.0, off_exp)
            test(m, d, mode, full, rng, diag_np, off_np)

        wrapped.__name__, wrapped.__doc__ = test.__name__, test.__doc__
        return wrapped

    return decorate


@structure_case(min_m=1, off_exp=0.0)
def test_only_upper_blocks_are_used(m, d, mode, full, rng, diag_np, off_np):
    changed = off_np.copy()
    for i in range(m):
        for j in range(i + 1):  # blocks i >= j, diagonal included
            changed[i, j] = rng.standard_normal((d, d)) * 10.0 ** rng.uniform(-5, 5)
    diag = torch.as_tensor(diag_np)
    a = assemble_block_covariance(diag, torch.as_tensor(off_np), mode=mode)
    b = assemble_block_covariance(diag, torch.as_tensor(changed), mode=mode)
    assert torch.equal(a, b)


@structure_case(min_m=2, off_exp=1.0)
def test_graph_non_edges_are_zero_and_absent_from_row_sums(m, d, mode, full, rng, diag_np, off_np):
    graph_np = random_graph(rng, m)
    out = assemble_block_covariance(
        torch.as_tensor(diag_np), torch.as_tensor(off_np), mode=mode, graph=torch.as_tensor(graph_np)
    ).numpy()
    # Same as zeroing the non-edge blocks by hand and assembling without a graph.
    zeroed = off_np.copy()
    for i in range(m):
        for j in range(m):
            if not graph_np[i, j]:
                zeroed[i, j] = 0.0
    no_graph = assemble_block_covariance(
        torch.as_tensor(diag_np), torch.as_tensor(zeroed), mode=mode
    ).numpy()
    np.testing.assert_allclose(out, no_graph, rtol=1e-12, atol=0)
    for i in range(m):
        for j in range(m):
            if i != j and not graph_np[i, j]:
                assert (get_block(out, i, j, d) == 0).all()


def test_graph_given_as_int_or_float_matrix():
    rng = np.random.default_rng(0)
    diag_np, off_np = random_inputs(rng, (), 3, 2, False, 0.0, 0.0, 0.0)
    g = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]])
    ref = assemble_block_covariance(
        torch.as_tensor(diag_np), torch.as_tensor(off_np), graph=torch.as_tensor(g.astype(bool))
    )
    for g_alt in (torch.as_tensor(g), torch.as_tensor(g, dtype=torch.float32)):
        out = assemble_block_covariance(torch.as_tensor(diag_np), torch.as_tensor(off_np), graph=g_alt)
        assert torch.equal(out, ref)


@settings(max_examples=40, deadline=None)
@given(
    **block_layouts(),
    dtype=st.sampled_from(["float32", "float64"]),
    seed=SEEDS,
)
def test_weak_coupling_is_not_rescaled(m, d, batch, mode, full, dtype, seed):
    rng = np.random.default_rng(seed)
    # lambda_min(S_ii) >= 1 (variances in [1, 100], or blocks scaled by >= 10 with c >= 0.1),
    # row sums <= (M-1) d^2 * 1e-3 * |N(0,1)| max, far below eps * lambda_min = 0.9.
    diag_np, off_np = random_inputs(rng, batch, m, d, full, 1.0, 2.0, 0.0)
    off_np = np.clip(off_np, -3, 3) * 1e-3
    tdtype = TORCH_DTYPES[dtype]
    off = torch.as_tensor(off_np, dtype=tdtype)
    out = assemble_block_covariance(torch.as_tensor(diag_np, dtype=tdtype), off, eps=0.9, mode=mode)
    for i in range(m):
        for j in range(m):
            if i < j:
                assert torch.equal(get_block(out, i, j, d), off[..., i, j, :, :])
            elif i > j:
                assert torch.equal(get_block(out, i, j, d), off[..., j, i, :, :].transpose(-1, -2))


def test_strong_coupling_is_scaled_down():
    """With huge off-diagonals the scaling is active and S_ij is much smaller than T_ij."""
    rng = np.random.default_rng(1)
    diag_np, off_np = random_inputs(rng, (), 3, 2, False, 0.0, 0.0, 6.0)
    for mode in MODES:
        out = assemble_block_covariance(torch.as_tensor(diag_np), torch.as_tensor(off_np), mode=mode)
        assert get_block(out, 0, 1, 2).abs().max() < 10.0
        assert torch.linalg.eigvalsh(out)[0] > 0


# ---------------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------------
def _grads(diag, off, **kw):
    diag = diag.clone().requires_grad_(True)
    off = off.clone().requires_grad_(True)
    out = assemble_block_covariance(diag, off, **kw)
    w = torch.linspace(-1.0, 1.0, out.numel(), dtype=out.dtype).reshape(out.shape)
    loss = (w * out).sum() + torch.linalg.cholesky(out).diagonal(dim1=-2, dim2=-1).log().sum()
    gd, go = torch.autograd.grad(loss, (diag, off))
    return gd, go


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize("d", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_are_finite(mode, full, d, dtype):
    rng = np.random.default_rng(d)
    m = 4
    diag_np, off_np = random_inputs(rng, (2,), m, d, full, -2.0, 2.0, 2.0)
    diag, off = torch.as_tensor(diag_np, dtype=dtype), torch.as_tensor(off_np, dtype=dtype)
    graph = torch.tensor(
        [[0, 1, 0, 0], [1, 0, 0, 1], [0, 0, 0, 0], [0, 1, 0, 0]], dtype=torch.bool
    )  # component 2 isolated
    for kw in ({}, {"graph": graph}):
        gd, go = _grads(diag, off, mode=mode, **kw)
        assert torch.isfinite(gd).all() and torch.isfinite(go).all()
        # Unused blocks (i >= j, and non-edges) get exactly zero gradient.
        for i in range(m):
            for j in range(m):
                unused = i >= j or ("graph" in kw and not bool(graph[i, j]))
                if unused:
                    assert (go[..., i, j, :, :] == 0).all()
    # All-zero off-diagonals (degenerate singular values) and tiny ones.
    for scale in (0.0, 1e-30):
        gd, go = _grads(diag, off * scale, mode=mode)
        assert torch.isfinite(gd).all() and torch.isfinite(go).all()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize("d", [1, 2])
def test_gradcheck_float64(mode, full, d):
    """Analytic gradients agree with finite differences at a generic point."""
    rng = np.random.default_rng(10 + d)
    diag_np, off_np = random_inputs(rng, (), 3, d, full, -0.5, 0.5, 0.5)
    graph = torch.tensor([[0, 1, 1], [1, 0, 0], [1, 0, 0]], dtype=torch.bool)
    diag = torch.as_tensor(diag_np).requires_grad_(True)
    off = torch.as_tensor(off_np).requires_grad_(True)

    def f(dg, of):
        if full:
            dg = 0.5 * (dg + dg.transpose(-1, -2))  # keep the perturbed blocks symmetric
        return assemble_block_covariance(dg, of, mode=mode, graph=graph, validate=False)

    assert torch.autograd.gradcheck(f, (diag, off), eps=1e-6, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# Spectral norms (closed form for d = 2, top Gram eigenvalue otherwise) and the packed form
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("d", [1, 2, 3, 5, 16])
@pytest.mark.parametrize("dtype,rtol,gtol", [(torch.float64, 1e-12, 1e-9), (torch.float32, 1e-6, 3e-5)])
def test_spectral_norm_and_its_gradient_match_float64_svd(d, dtype, rtol, gtol):
    """sigma_max and its gradient u_1 v_1^T against NumPy's float64 SVD, for blocks whose entries
    span 12 orders of magnitude (the gradient where the top singular value is simple: gap >= 1%)."""
    rng = np.random.default_rng(d)
    blocks = rng.standard_normal((400, d, d)) * 10.0 ** rng.uniform(-6, 6, (400, 1, 1))
    t = torch.as_tensor(blocks, dtype=dtype).requires_grad_(True)
    norm = spectral_norm(t)
    (grad,) = torch.autograd.grad(norm.sum(), t)
    u, sv, vt = np.linalg.svd(t.detach().double().numpy())
    np.testing.assert_allclose(norm.detach().double().numpy(), sv[:, 0], rtol=rtol)
    simple = (sv[:, 0] - sv[:, 1]) / sv[:, 0] >= 1e-2 if d > 1 else np.ones(400, bool)
    assert simple.mean() > 0.9
    want = u[:, :, :1] @ vt[:, :1, :]
    np.testing.assert_allclose(grad.double().numpy()[simple], want[simple], rtol=0, atol=gtol)


@pytest.mark.parametrize("d", [2, 3, 16])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_spectral_norm_of_degenerate_blocks(d, dtype):
    """Zero blocks, multiples of the identity (every singular value repeated) and rank one: the
    exact value (up to sqrt(tiny)) and a finite gradient; for t I the gradient is a unit-norm
    subgradient v v^T (t > 0)."""
    rank_one = torch.outer(torch.arange(1.0, d + 1), torch.ones(d))
    cases = {0.0: torch.zeros(d, d), 3.0: 3 * torch.eye(d), float(torch.linalg.matrix_norm(rank_one, 2)): rank_one}
    for value, block in cases.items():
        t = block.to(dtype).requires_grad_(True)
        norm = spectral_norm(t)
        (grad,) = torch.autograd.grad(norm, t)
        assert abs(norm.item() - value) <= 1e-6 * max(value, 1.0) + 1e-18
        assert torch.isfinite(grad).all()
        if value == 3.0:
            assert torch.allclose(grad, grad.T) and float(grad.trace()) == pytest.approx(1.0, abs=1e-5)


@FAST
@given(**block_layouts(min_m=1), coupled=st.integers(1, 4), seed=SEEDS)
def test_packed_form_holds_each_distinct_entry_once(m, d, batch, mode, full, coupled, seed):
    """assemble_packed: ``dense()`` is assemble_block_covariance's matrix; the values are the
    scaled blocks i < j (c x c), the diagonal blocks as given and one zero; ``weights(A)`` gives
    ``<values, weights(A)> = <dense, A>`` for any A (the KL's trace)."""
    c = min(coupled, d)
    rng = np.random.default_rng(seed)
    diag_np, off_np = random_inputs(rng, batch, m, d, full, -2.0, 2.0, 0.5)
    diag, off = torch.as_tensor(diag_np), torch.as_tensor(off_np[..., :c, :c])
    packed = assemble_packed(diag, off, mode=mode)
    dense = packed.dense()
    torch.testing.assert_close(dense, assemble_block_covariance(diag, off, mode=mode), rtol=0, atol=0)
    n = m * d
    assert packed.values.shape == (*batch, num_offdiag_pairs(m) * c * c + m * d * (d if full else 1) + 1)
    assert float(packed.values[..., -1].abs().max()) == 0.0
    assert packed.index.shape == (n * n,) and packed.size == n
    diag_values = packed.values[..., num_offdiag_pairs(m) * c * c: -1]
    np.testing.assert_array_equal(diag_values.numpy(), diag_np.reshape(*batch, -1))
    a = torch.as_tensor(rng.standard_normal((*batch, n, n)))
    torch.testing.assert_close((packed.values * packed.weights(a)).sum(-1), (dense * a).sum((-2, -1)))


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------
def _good(m=3, d=2, dtype=torch.float64):
    return torch.ones(m, d, dtype=dtype), torch.zeros(m, m, d, d, dtype=dtype)


def test_bad_offdiag_shape():
    diag, _ = _good()
    for shape in [(3, 3, 2), (3, 2, 2, 2), (3, 3, 2, 1), (2, 3, 3, 2), (6, 6)]:
        with pytest.raises(ValueError):
            assemble_block_covariance(diag, torch.zeros(shape, dtype=torch.float64))


def test_bad_diag_shape():
    _, off = _good()
    # (3, 3) variances with 2 x 2 couplings are valid: two coupled coordinates of three
    # (tests/models/test_coupled_coordinates.py); fewer coordinates than the couplings are not.
    for shape in [(2, 2), (4, 2), (3, 1), (3, 2, 3), (3, 3, 2, 2), (3,), (2, 3, 2)]:
        with pytest.raises(ValueError):
            assemble_block_covariance(torch.ones(shape, dtype=torch.float64), off)


def test_non_positive_variance():
    diag, off = _good()
    for bad in (0.0, -1e-3, -5.0):
        d2 = diag.clone()
        d2[1, 0] = bad
        with pytest.raises(ValueError):
            assemble_block_covariance(d2, off)


def test_non_spd_full_block():
    _, off = _good()
    blocks = torch.eye(2, dtype=torch.float64).repeat(3, 1, 1)
    blocks[2] = torch.tensor([[1.0, 2.0], [2.0, 1.0]])  # eigenvalues 3, -1
    with pytest.raises(ValueError):
        assemble_block_covariance(blocks, off)
    blocks[2] = torch.tensor([[1.0, 1.0], [1.0, 1.0]])  # singular
    with pytest.raises(ValueError):
        assemble_block_covariance(blocks, off)
    blocks[2] = torch.tensor([[2.0, 1.0], [0.0, 2.0]])  # not symmetric
    with pytest.raises(ValueError):
        assemble_block_covariance(blocks, off)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite(bad):
    diag, off = _good()
    d2 = diag.clone()
    d2[0, 1] = bad
    with pytest.raises(ValueError):
        assemble_block_covariance(d2, off)
    o2 = off.clone()
    o2[0, 2, 1, 0] = bad
    with pytest.raises(ValueError):
        assemble_block_covariance(diag, o2)


@pytest.mark.parametrize("eps", [0.0, 1.0, -0.5, 1.5, float("nan")])
def test_eps_outside_unit_interval(eps):
    diag, off = _good()
    with pytest.raises(ValueError):
        assemble_block_covariance(diag, off, eps=eps)


def test_unknown_mode():
    diag, off = _good()
    for mode in ("spectral", "", None, "Blockwise"):
        with pytest.raises(ValueError):
            assemble_block_covariance(diag, off, mode=mode)


def test_integer_dtype():
    diag, off = _good()
    with pytest.raises(ValueError):
        assemble_block_covariance(diag.long(), off)
    with pytest.raises(ValueError):
        assemble_block_covariance(diag, off.int())


def test_bad_graph():
    diag, off = _good()
    nonsym = torch.tensor([[0, 1, 0], [0, 0, 1], [0, 1, 0]], dtype=torch.bool)
    with pytest.raises(ValueError):
        assemble_block_covariance(diag, off, graph=nonsym)
    for shape in [(2, 2), (4, 4), (3,), (3, 3, 1)]:
        with pytest.raises(ValueError):
            assemble_block_covariance(diag, off, graph=torch.zeros(shape, dtype=torch.bool))


def test_bad_delta():
    diag, off = _good()
    for delta in (0.0, -1.0):
        with pytest.raises(ValueError):
            assemble_block_covariance(diag, off, delta=delta)


# ---------------------------------------------------------------------------------------------
# How much dependence a block dominant covariance allows (docs/mathematics.md, "Covariance or
# precision for the prior"): exact linear algebra in float64 on the assembled matrices.
# ---------------------------------------------------------------------------------------------
def whitened(mat, m, d):
    """``R = W S W`` with ``W = blockdiag(S_ii^{-1/2})`` (numpy, symmetric eigendecompositions)."""
    w = np.zeros_like(mat)
    for i in range(m):
        vals, vecs = np.linalg.eigh(get_block(mat, i, i, d))
        w[i * d:(i + 1) * d, i * d:(i + 1) * d] = vecs @ np.diag(vals ** -0.5) @ vecs.T
    return w @ mat @ w


def canonical_correlation(r, i, j, d):
    return np.linalg.norm(get_block(r, i, j, d), 2)


@settings(max_examples=40, deadline=None)
@given(m=st.integers(2, 5), d=st.integers(1, 3), mode=st.sampled_from(MODES), full=st.booleans(),
       eps=st.sampled_from([0.3, 0.9, 0.99]), off_exp=st.sampled_from([-1.0, 0.0, 2.0]), seed=SEEDS)
def test_whitened_spectrum_lies_within_eps_of_one(m, d, mode, full, eps, off_exp, seed):
    """Every eigenvalue of the whitened covariance lies in (1 - eps, 1 + eps); so every canonical
    correlation is below eps."""
    rng = np.random.default_rng(seed)
    diag, off = random_inputs(rng, (), m, d, full, var_lo=-1.0, var_hi=1.0, off_exp=off_exp)
    mat = assemble_block_covariance(torch.as_tensor(diag), torch.as_tensor(off), eps=eps, mode=mode).numpy()
    r = whitened(mat, m, d)
    vals = np.linalg.eigvalsh(r)
    assert vals.min() > 1 - eps - 1e-9 and vals.max() < 1 + eps + 1e-9, (vals, eps)
    rho = max(canonical_correlation(r, i, j, d) for i in range(m) for j in range(m) if i != j)
    assert rho < eps + 1e-9


def _coupled(m, pairs, eps, t=1e6):
    """d = 1, unit variances, T_ij = t on the given pairs: the dominance bound is nearly attained."""
    off = torch.zeros(m, m, 1, 1, dtype=torch.float64)
    for i, j in pairs:
        off[i, j] = off[j, i] = t
    mat = assemble_block_covariance(torch.ones(m, 1, dtype=torch.float64), off, eps=eps).numpy()
    return whitened(mat, m, 1)


def test_canonical_correlations_reach_eps_for_a_pair_and_their_sum_exceeds_it_on_a_star():
    """The audit's counterexamples to 'sum_j rho_max(i, j) < eps' (M = 4, eps = 0.9): one coupled
    pair reaches rho = 0.900, and a star reaches the blockwise bound eps sqrt(M - 1) = 1.559."""
    r = _coupled(4, [(0, 1)], 0.9)
    assert canonical_correlation(r, 0, 1, 1) == pytest.approx(0.9, abs=1e-5)
    r = _coupled(4, [(0, 1), (0, 2), (0, 3)], 0.9)
    total = sum(canonical_correlation(r, 0, j, 1) for j in (1, 2, 3))
    assert total == pytest.approx(0.9 * np.sqrt(3), abs=1e-5) and total > 1.5
    # All pairs coupled alike: rho < eps / (M - 1).
    r = _coupled(4, [(i, j) for i in range(4) for j in range(i + 1, 4)], 0.9)
    assert canonical_correlation(r, 0, 1, 1) < 0.9 / 3


@pytest.mark.parametrize("seed", range(20))
def test_no_per_component_decoder_lifts_the_spectrum_bound(seed):
    """d = 1: f_k(z_k) = sum_n c_kn He_n(z_k) / sqrt(n!) has Cov(f_i, f_j) = sum_n c_in c_jn R_ij^n
    exactly (Mehler), so the correlation matrix of random nonlinear decoders' outputs is exact.
    Its spectrum stays in [1 - eps, 1 + eps], as the Wiener-chaos argument says; the copula's
    four components at +-0.9 (eigenvalue 3.7) are out of reach."""
    rng = np.random.default_rng(seed)
    m, eps, levels = 4, 0.9, 6
    off = torch.as_tensor(rng.standard_normal((m, m, 1, 1)) * 10.0 ** rng.uniform(-1, 3))
    mat = assemble_block_covariance(torch.as_tensor(rng.uniform(0.5, 2.0, (m, 1))), off, eps=eps).numpy()
    r = whitened(mat, m, 1)
    c = rng.standard_normal((m, levels)) * rng.uniform(0, 1, (m, levels))
    cov = sum(np.outer(c[:, n], c[:, n]) * r ** (n + 1) for n in range(levels))
    corr = cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
    vals = np.linalg.eigvalsh(corr)
    assert vals.min() >= 1 - eps - 1e-9 and vals.max() <= 1 + eps + 1e-9, vals
