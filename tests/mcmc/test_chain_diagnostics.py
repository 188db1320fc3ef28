"""The recorded draws and what the diagnostics describe: the ring buffer keeps the last draws in
order with their kernel, and after ``restart_warmup(clear=False)`` the diagnostics say how many
kernels their draws pool while the transition totals describe the current kernel alone."""

import pytest
import torch

from pyro_mcvae.mcmc import PersistentHMC
from pyro_mcvae.mcmc.diagnostics import DrawBuffer


def test_the_ring_buffer_keeps_the_last_draws_oldest_first_with_their_kernel():
    buf = DrawBuffer(keep=5)
    assert buf.get("z", 2, 3).shape == (2, 0, 3) and buf.get("kernel", 2, 3).shape == (0,)
    for i in range(8):
        z = torch.full((2, 3), float(i))
        buf.record(i // 4, z, z[:, 0], z[:, 0] + 1, torch.full((2,), 0.5), torch.zeros(2, dtype=torch.bool))
    assert len(buf) == 5 and buf.count == 8
    assert buf.get("z", 2, 3)[0, :, 0].tolist() == [3.0, 4.0, 5.0, 6.0, 7.0]
    assert buf.get("hamiltonian", 2, 3)[1].tolist() == [4.0, 5.0, 6.0, 7.0, 8.0]
    assert buf.get("kernel", 2, 3).tolist() == [0, 1, 1, 1, 1]
    with pytest.raises(KeyError, match="no recorded 'lp'"):
        buf.get("lp", 2, 3)


def _sampler(keep=100):
    torch.manual_seed(1)
    scales = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    return PersistentHMC(lambda z: 0.5 * (z / scales).pow(2).sum(-1), torch.randn(32, 3, dtype=torch.float64),
                         step_size=0.3, num_steps=4, warmup=30, keep=keep)


def test_diagnostics_label_the_kernels_they_pool_and_report_the_current_kernels_totals():
    """30 draws of kernel 0, a restart with ``clear=False`` and a shorter target acceptance, 30
    draws of kernel 1: the ArviZ numbers pool 60 draws of 2 kernels (``kernels``, and per draw
    ``sample_stats.kernel``); the acceptance rate is kernel 1's mean Metropolis probability
    (0.95 target), not the mean over both (0.8 and 0.95)."""
    hmc = _sampler()
    hmc.step(60)
    first = hmc.diagnostics()
    assert first["kernels"] == 1 and first["draws_per_chain"] == 30
    hmc.target_accept = 0.95  # the second kernel takes smaller steps: a different acceptance
    hmc.restart_warmup(30, clear=False)
    mid = hmc.diagnostics()  # during the new warm-up: no transitions of the new kernel yet
    assert mid["kernels"] == 1 and mid["draws_per_chain"] == 30 and mid["acceptance_rate"] != mid["acceptance_rate"]
    hmc.step(60)
    d = hmc.diagnostics()
    kernel = hmc.recorded("kernel")
    assert kernel.tolist() == [0] * 30 + [1] * 30
    assert d["kernels"] == 2 and d["draws_per_chain"] == 60
    accept = hmc.recorded("accept_prob")  # (C, S): every transition after a warm-up is recorded here
    own, pooled = accept[:, kernel == 1].mean().item(), accept.mean().item()
    assert d["acceptance_rate"] == pytest.approx(own, rel=1e-12)
    assert abs(own - pooled) > 0.03 and own > 0.85
    assert d["mean_leapfrog_steps"] == hmc.num_leapfrog_steps  # the current kernel's fixed trajectory
    idata = hmc.inference_data()
    assert idata.sample_stats["kernel"].shape == (32, 60)
    assert (idata.sample_stats["kernel"].values == kernel.numpy()).all()


def test_a_cleared_restart_or_a_full_buffer_leaves_one_kernel():
    hmc = _sampler()
    hmc.step(45)
    hmc.restart_warmup(30)  # clear=True: only the new kernel's draws
    hmc.step(45)
    assert hmc.diagnostics()["kernels"] == 1 and hmc.recorded("kernel").unique().tolist() == [1]
    small = _sampler(keep=10)  # the first kernel's draws have left the ring buffer
    small.step(45)
    small.restart_warmup(30, clear=False)
    small.step(45)
    assert small.diagnostics()["kernels"] == 1 and small.draws_per_chain == 10
