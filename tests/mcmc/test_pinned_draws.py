"""Draws of :class:`~pyro_mcvae.mcmc.PersistentHMC` pinned before the sampler was split into
pieces (integrator, adapters, warm-up schedule, kernel): the same seed must give the same chains,
adapted step size, trajectory and mass as the single-module sampler of commit 5bfdf0f (recorded
there with the cases below)."""

import pytest
import torch

from pyro_mcvae.mcmc import PersistentHMC


def energy(z):
    """A correlated, non-Gaussian energy (a coupled quadratic plus a quartic), row by row."""
    a = torch.tensor([[1.0, 0.6, 0.0], [0.6, 2.0, -0.4], [0.0, -0.4, 0.5]], dtype=z.dtype)
    return 0.5 * ((z @ a) * z).sum(-1) + 0.1 * (z ** 4).sum(-1)


def run(case, dtype):
    """12 chains in 3-d, 40 warm-up transitions, 60 in all (``restart``: a second warm-up of 10
    after 45 transitions, its draws pooled with the first kernel's)."""
    torch.manual_seed(11)
    init = torch.randn(12, 3, dtype=dtype)
    kw = dict(step_size=0.3, num_steps=6, warmup=40, keep=30)
    if case == "plain":
        kw.update(jitter=0.0, adapt_trajectory=False, adapt_mass=False, adapt_step_size=False)
    elif case == "dense":
        kw.update(dense_mass=True)
    elif case == "groups":
        kw.update(groups=torch.arange(12) % 3)
    hmc = PersistentHMC(energy, init, **kw)
    hmc.step(45)
    if case == "restart":
        hmc.restart_warmup(10, clear=False)
    hmc.step(15)
    return hmc


PINNED = {
    ("default", "float64"): dict(
        first=[-1.7969995620398445, 0.6773679030383452, 0.9216120978247636],
        last=[0.030994248985425715, -0.7897364944667459, -1.411768284503177],
        step_size=1.2085461559727855, trajectory=1.5451242347386143,
        inv_mass=[0.6347511445704858, 0.4362991511266012, 0.8351894555972621],
        energy_sum=267.03361632492926, accept_sum=198.03562646293844, draws=20),
    ("default", "float32"): dict(
        first=[-0.3747815787792206, -0.6716921329498291, -0.6260594129562378],
        last=[-0.8330140709877014, -0.22993779182434082, -0.06804817169904709],
        step_size=1.2081538791745317, trajectory=1.422035767148721,
        inv_mass=[0.6363844871520996, 0.6202326416969299, 0.7259300947189331],
        energy_sum=252.62896361202002, accept_sum=191.80918499981163, draws=20),
    ("plain", "float64"): dict(
        first=[-1.3071252321382942, 1.1699395537612747, 0.45855554203829485],
        last=[0.2899847323613548, -0.6526132542041706, -1.4408688387751276],
        step_size=0.3, trajectory=1.7999999999999998,
        inv_mass=[1.0, 1.0, 1.0],
        energy_sum=277.4405165057368, accept_sum=237.02165014676976, draws=20),
    ("dense", "float64"): dict(
        first=[-1.1884608124979343, 0.8847630467206171, 0.7177434274156244],
        last=[0.03839204395713851, -0.7148468184637498, -1.489972040726165],
        step_size=1.1376034732369689, trajectory=1.3772526756938828,
        inv_mass=[0.6537311585508048, -0.12907590421852508, -0.10826531102908574],
        energy_sum=304.88305612081547, accept_sum=203.47693017029127, draws=20),
    ("groups", "float64"): dict(
        first=[0.5801223038885494, 1.0796897990770933, 0.7744176680770184],
        last=[0.07270411520701164, -0.7974500965013084, -1.5152874405719285],
        step_size=1.169654110991535, trajectory=1.6285079703204774,
        inv_mass=[0.6569091308215116, 0.47029927187777953, 0.9035495712370687],
        energy_sum=260.75944910842566, accept_sum=193.3358052856907, draws=20),
    ("restart", "float64"): dict(
        first=[0.6553270070978631, 1.0787982663963374, 0.7775220274526569],
        last=[-0.00878483571963845, -0.6788023661325725, -1.3846785942390585],
        step_size=1.1822311600570286, trajectory=1.6927170496010338,
        inv_mass=[0.6347511445704858, 0.4362991511266012, 0.8351894555972621],
        energy_sum=144.95350865836443, accept_sum=97.3860799538229, draws=10),
}


@pytest.mark.parametrize("case,dtype", list(PINNED))
def test_the_kernel_gives_the_draws_of_the_single_module_sampler(case, dtype):
    want = PINNED[case, dtype]
    hmc = run(case, getattr(torch, dtype))
    exact = dict(rtol=1e-12, atol=1e-12) if dtype == "float64" else dict(rtol=1e-6, atol=1e-6)
    got = dict(first=hmc.samples[0].tolist(), last=hmc.samples[-1].tolist(), step_size=hmc.step_size,
               trajectory=hmc.trajectory, inv_mass=hmc.inv_mass.flatten()[:3].tolist(),
               energy_sum=float(hmc.recorded("energy").double().sum()),
               accept_sum=float(hmc.recorded("accept_prob").double().sum()), draws=hmc.draws_per_chain)
    assert got["draws"] == want["draws"]
    for key in ("first", "last", "step_size", "trajectory", "inv_mass", "energy_sum", "accept_sum"):
        torch.testing.assert_close(torch.tensor(got[key], dtype=torch.float64),
                                   torch.tensor(want[key], dtype=torch.float64), **exact, msg=key)
