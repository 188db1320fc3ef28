"""Under bf16 autocast the latent-law linear algebra still runs in float32 (the networks may not)."""

import torch
from torch.distributions import kl_divergence

from pyro_mcvae import MCVAE
from pyro_mcvae.covariance import assemble_block_covariance
from pyro_mcvae.distributions import GMRF, complete_from_prior


def _inputs(seed=0, m=3, d=2):
    g = torch.Generator().manual_seed(seed)
    var = torch.rand(4, m, d, generator=g) + 0.5
    off = torch.randn(4, m, m, d, d, generator=g)
    loc = torch.randn(4, m * d, generator=g)
    return loc, var, off


def test_assembly_and_gmrf_ignore_autocast():
    loc, var, off = _inputs()
    reference = assemble_block_covariance(var, off)
    q_ref = GMRF.from_blocks(loc, var, off)
    p_ref = GMRF(torch.zeros(6), torch.eye(6), num_components=3, component_dim=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        # Half-precision inputs, as a network under autocast produces them.
        cov = assemble_block_covariance(var.bfloat16(), off.bfloat16())
        q = GMRF.from_blocks(loc.bfloat16(), var, off)
        torch.manual_seed(1)
        z = q.rsample((5,))
        kl = kl_divergence(q, p_ref)
        full = q._covariance_unbroadcast()
        done = complete_from_prior(q.loc, full, torch.tensor([[True, False, True]] * 4), p_ref, 2)
    assert cov.dtype == torch.float32 and q.loc.dtype == torch.float32
    assert z.dtype == torch.float32 and kl.dtype == torch.float32 and done.loc.dtype == torch.float32
    # Only the inputs were rounded to bf16; the algebra itself matches the float32 result closely.
    assert torch.allclose(cov, assemble_block_covariance(var.bfloat16().float(), off.bfloat16().float()), atol=1e-6)
    assert torch.allclose(kl, kl_divergence(GMRF.from_blocks(loc.bfloat16().float(), var, off), p_ref), atol=1e-5)
    torch.manual_seed(1)
    z_ref = GMRF.from_blocks(loc.bfloat16().float(), var, off).rsample((5,))
    assert torch.allclose(z, z_ref, atol=1e-6)
    assert torch.allclose(q_ref.covariance_matrix, reference, atol=1e-6)


def test_bf16_training_step_of_the_gmrf_model():
    torch.manual_seed(0)
    model = MCVAE.build([2] * 3, latent_dim=2, hidden=(16,))
    x = torch.randn(32, 3, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q = model.guide.posterior(x)
        prior = model.prior()
    assert q.loc.dtype == torch.float32 and q.scale_tril.dtype == torch.float32
    assert prior.scale_tril.dtype == torch.float32
