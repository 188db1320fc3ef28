"""The leapfrog integrator and the Euclidean metric alone: reversible, volume-preserving, an
``O(h^2)`` energy error on a quadratic Hamiltonian, momenta of covariance ``M``."""

import pytest
import torch

from pyro_mcvae.mcmc import EuclideanMetric, leapfrog

A = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, 0.3], [0.0, 0.3, 0.7]], dtype=torch.float64)
METRICS = {"diagonal": torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64),
           "dense": torch.tensor([[1.0, 0.4, 0.1], [0.4, 0.8, -0.2], [0.1, -0.2, 1.5]], dtype=torch.float64)}


def quartic(z):
    """A non-quadratic energy ``(C,)`` of ``z (C, 3)``."""
    return 0.5 * ((z @ A) * z).sum(-1) + 0.2 * (z ** 4).sum(-1) + torch.sin(z[:, 0] * z[:, 1])


def energy_and_grad(energy, create_graph=False):
    def fn(z):
        if not z.requires_grad:
            z = z.detach().requires_grad_(True)
        with torch.enable_grad():
            e = energy(z)
            (g,) = torch.autograd.grad(e.sum(), z, create_graph=create_graph)
        return e, g
    return fn


def states(seed, chains):
    """``z``, ``p`` ``(chains, 3)``, standard normal, float64."""
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(chains, 3, generator=gen, dtype=torch.float64) for _ in range(2))


def run(z, p, steps, counts, metric, energy=quartic, create_graph=False):
    """Leapfrog of every chain: ``counts (C,)`` steps of ``steps (C,)``; returns ``(z', p')``."""
    fn = energy_and_grad(energy, create_graph)
    e, g = fn(z)
    z1, p1, _, _ = leapfrog(z, p, e, g, steps[:, None], counts[:, None].to(z.dtype), int(counts.max()), fn, metric)
    return z1, p1


@pytest.mark.parametrize("kind", list(METRICS))
def test_leapfrog_is_reversible_chain_by_chain(kind):
    """Integrate, flip the momentum, integrate again, flip: the start, to rounding (each chain with
    its own step and count; the last kick halved, or the map would not be reversible)."""
    z, p = states(0, 6)
    steps = torch.tensor([0.05, 0.1, 0.2, 0.15, 0.3, 0.02], dtype=torch.float64)
    counts = torch.tensor([1, 3, 7, 2, 5, 7])
    metric = EuclideanMetric(METRICS[kind])
    z1, p1 = run(z, p, steps, counts, metric)
    assert (z1 - z).abs().max() > 0.05  # it moved
    z2, p2 = run(z1, -p1, steps, counts, metric)
    torch.testing.assert_close(z2, z, rtol=0, atol=1e-12)
    torch.testing.assert_close(-p2, p, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", list(METRICS))
def test_leapfrog_preserves_volume(kind):
    """The Jacobian of ``(z, p) -> (z', p')`` on a non-quadratic energy has determinant 1."""
    metric = EuclideanMetric(METRICS[kind])
    gen = torch.Generator().manual_seed(1)
    start = torch.randn(6, generator=gen, dtype=torch.float64)

    def flow(x):
        z1, p1 = run(x[None, :3], x[None, 3:], torch.tensor([0.2], dtype=torch.float64), torch.tensor([5]),
                     metric, create_graph=True)
        return torch.cat([z1[0], p1[0]])

    jac = torch.autograd.functional.jacobian(flow, start)
    assert (jac - torch.eye(6, dtype=torch.float64)).abs().max() > 0.1  # not the identity map
    assert torch.linalg.det(jac).item() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("kind", list(METRICS))
def test_energy_error_on_a_quadratic_hamiltonian_is_second_order(kind):
    """Over a fixed time ``T = 1.2`` the worst error in ``H`` falls 4 times per halved step."""
    metric = EuclideanMetric(METRICS[kind])
    z, p = states(2, 200)

    def quadratic(x):
        return 0.5 * ((x @ A) * x).sum(-1)

    errors = []
    for n in (12, 24, 48):
        z1, p1 = run(z, p, torch.full((200,), 1.2 / n, dtype=torch.float64), torch.full((200,), n), metric, quadratic)
        dh = quadratic(z1) + metric.kinetic(p1) - quadratic(z) - metric.kinetic(p)
        errors.append(dh.abs().max().item())
    assert errors[0] > 1e-4  # the error is there to measure
    for coarse, fine in zip(errors, errors[1:]):
        assert 3.6 < coarse / fine < 4.4, errors


def test_a_chain_past_its_own_count_is_frozen():
    """A chain's end does not depend on how long the other chains run."""
    z, p = states(3, 2)
    metric = EuclideanMetric(METRICS["diagonal"])
    steps = torch.tensor([0.1, 0.1], dtype=torch.float64)
    together = run(z, p, steps, torch.tensor([3, 9]), metric)
    alone = run(z[:1], p[:1], steps[:1], torch.tensor([3]), metric)
    torch.testing.assert_close(together[0][:1], alone[0], rtol=0, atol=0)
    torch.testing.assert_close(together[1][:1], alone[1], rtol=0, atol=0)


@pytest.mark.parametrize("kind", list(METRICS))
def test_metric_momenta_kinetic_energy_and_whitened_length(kind):
    """``p ~ N(0, M)`` (covariance within 4 standard errors), ``K(p) = p^T M^-1 p / 2`` and
    ``x^T M x`` against dense float64 references."""
    inv = METRICS[kind]
    dense_inv = torch.diag(inv) if inv.dim() == 1 else inv
    mass = torch.linalg.inv(dense_inv)
    metric = EuclideanMetric(inv)
    torch.manual_seed(4)
    n = 200_000
    p = metric.sample_momentum(torch.zeros(n, 3, dtype=torch.float64))
    cov = p.T @ p / n
    se = ((mass.diag()[:, None] * mass.diag()[None, :] + mass ** 2) / n).sqrt()  # of a Gaussian's covariance
    assert ((cov - mass).abs() / se).max() < 4
    x = torch.randn(5, 3, dtype=torch.float64)
    torch.testing.assert_close(metric.kinetic(x), 0.5 * torch.einsum("ci,ij,cj->c", x, dense_inv, x))
    torch.testing.assert_close(metric.velocity(x), x @ dense_inv)
    torch.testing.assert_close(metric.whitened_sq(x), torch.einsum("ci,ij,cj->c", x, mass, x))
