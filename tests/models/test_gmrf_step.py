"""The GMRF MCVAE's training step (TraceMeanField_ELBO, float32) against a dense float64 step
written from the formulas: the same loss and the same gradient of every parameter.

The reference shares nothing with the package's latent-law code: it mirrors the blocks ``i < j``
by hand, takes spectral norms from float64 SVDs (``matrix_norm(ord=2)``), builds each matrix block
by block, factorises the posterior covariance with ``cholesky``, inverts the prior's precision and
takes log-determinants with ``slogdet``. The networks and likelihoods are the model's own, run in
float64 on a copy of its parameters. One draw ``u`` of the step (the guide's only random numbers)
is replayed by seeding the same generator.
"""

import copy

import pyro
import pytest
import torch
from torch.distributions.utils import _standard_normal

from pyro_mcvae.infer.objectives import objective_for
from pyro_mcvae.models import MCVAE


def dense_assembly(diag, offdiag, eps, delta, mode):
    """The block construction for diagonal variances ``(..., M, d)`` and raw blocks
    ``(..., M, M, d, d)``, block by block (``docs/mathematics.md``); returns the matrix and the
    scalings ``a`` (a list over components)."""
    m = diag.shape[-2]
    t = {(i, j): offdiag[..., i, j, :, :] if i < j else offdiag[..., j, i, :, :].transpose(-1, -2)
         for i in range(m) for j in range(m) if i != j}
    lam = diag.min(-1).values  # (..., M): a diagonal block's smallest eigenvalue
    if mode == "blockwise":
        sums = [sum(torch.linalg.matrix_norm(t[i, j], ord=2) for j in range(m) if j != i) + delta for i in range(m)]
        a = [torch.clamp(eps * lam[..., i] / sums[i], max=1.0)[..., None, None] for i in range(m)]
        scale = {(i, j): (a[i] * a[j]).sqrt() for (i, j) in t}
    else:
        sums = [sum(t[i, j].abs().sum(-1) for j in range(m) if j != i) + delta for i in range(m)]  # (..., d)
        a = [torch.clamp(eps * lam[..., i, None] / sums[i], max=1.0) for i in range(m)]
        scale = {(i, j): (a[i][..., :, None] * a[j][..., None, :]).sqrt() for (i, j) in t}
    rows = [torch.cat([torch.diag_embed(diag[..., i, :]) if i == j else scale[i, j] * t[i, j] for j in range(m)], -1)
            for i in range(m)]
    return torch.cat(rows, -2), a


def reference_loss(model, xs, u):
    """The negative ELBO summed over the batch, dense float64 (``model`` in float64, ``u`` the
    standard normal draw of the posterior sample)."""
    g, prior = model.guide, model.prior
    loc, var = g.encoder(xs)
    cov_q, _ = dense_assembly(var, g.global_net(xs), g.eps, g.delta, g.mode)
    z = loc.flatten(-2) + (torch.linalg.cholesky(cov_q) @ u.unsqueeze(-1)).squeeze(-1)
    params = model.decoder(model._decoder_input(z))
    loglik = sum(lik(p).log_prob(x) for lik, p, x in zip(model.likelihoods, params, xs))
    prec_p, _ = dense_assembly(torch.nn.functional.softplus(prior.raw_diag) + 1e-4, prior.offdiag, prior.eps,
                               prior.delta, prior.mode)
    cov_p = torch.linalg.inv(prec_p)
    diff = (prior.loc.flatten() - loc.flatten(-2)).unsqueeze(-1)
    kl = 0.5 * ((prec_p * cov_q).sum((-2, -1)) + (diff.transpose(-1, -2) @ prec_p @ diff)[..., 0, 0]
                - z.shape[-1] + torch.linalg.slogdet(cov_p)[1] - torch.linalg.slogdet(cov_q)[1])
    return -(loglik - kl).sum()


@pytest.mark.parametrize("d,mode,dim,hidden", [
    (2, "blockwise", 2, (16,)),  # the copula size (closed-form 2 x 2 norms)
    (3, "blockwise", 5, (16,)),  # top eigenvalues of 3 x 3 Gram matrices
    (3, "elementwise", 5, (16,)),
    (16, "blockwise", 64, (32,)),  # the large size of benchmarks/step_time.py
])
def test_step_loss_and_gradients_match_dense_float64(d, mode, dim, hidden):
    m, batch, seed = 4, 8, 3
    torch.manual_seed(seed)
    model = MCVAE.build([dim] * m, latent_dim=d, hidden=hidden, mode=mode)
    with torch.no_grad():  # components 0 and 1 coupled strongly (scaled: a < 1), the others weakly (a = 1)
        last = model.guide.global_net.net[-1]
        last.weight.normal_(0.0, 1e-3)
        last.weight[: d * d].normal_(0.0, 1.0)  # the block (0, 1), the first of torch.triu_indices
        last.bias.zero_()
        model.prior.offdiag.normal_(0.0, 1.0)
        model.prior.raw_diag.uniform_(-0.5, 1.0)
        model.prior.loc.normal_(0.0, 0.5)
    xs = list(torch.rand(batch, m, dim).unbind(1))
    pyro.clear_param_store()
    objective = objective_for(model)
    params = dict(model.named_parameters())

    torch.manual_seed(seed + 1)
    loss = objective.differentiable_loss(model.model, model.guide, xs)
    grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))

    ref_model = copy.deepcopy(model).double()
    torch.manual_seed(seed + 1)
    u = _standard_normal((batch, m * d), dtype=torch.float32, device="cpu").double()
    ref_params = dict(ref_model.named_parameters())
    ref = reference_loss(ref_model, [x.double() for x in xs], u)
    ref_grads = dict(zip(ref_params, torch.autograd.grad(ref, list(ref_params.values()))))

    # Not vacuous: some rows of the posterior are scaled (a_i < 1) and some are not.
    with torch.no_grad():
        ref_xs = [x.double() for x in xs]
        _, var = ref_model.guide.encoder(ref_xs)
        _, a = dense_assembly(var, ref_model.guide.global_net(ref_xs), model.guide.eps, model.guide.delta, mode)
        a = torch.stack([ai.flatten() for ai in a])
    assert (a < 0.9).any() and (a == 1).any()

    torch.testing.assert_close(loss.double(), ref, rtol=1e-6, atol=0)
    for name, g in grads.items():
        r = ref_grads[name]
        scale = r.abs().max().clamp_min(1e-6)
        err = (g.double() - r).abs().max() / scale
        assert err < 2e-5, (name, float(err))
