"""Completing a posterior from the prior: the library's ``complete_from_prior`` against the
precision route it replaced (2026-11-26), forward and backward, side by side.

The case is the GMRF's subset-posterior training step on PolyMNIST: a batch of ``2 x 128``
posteriors over ``M = 5`` blocks of ``d = 16`` (the tuple's copy with every modality present,
then a copy with one given modality per datum), completed by a learned prior. Both routes give the
law ``q(z_A) p(z_B | z_A)``; the script checks that their means and covariances agree, then
times ``complete_from_prior`` + KL to the prior + one draw + backward, interleaved.

- ``precision`` (the earlier code, kept here as the baseline): per row, the precision
  ``J = Q_p + E_A (S_q,AA^-1 - S_p,AA^-1) E_A^T`` from padded Cholesky inverses of the
  posterior's and the prior's ``A`` blocks, the mean from ``J``'s factor, and a GMRF built from
  ``J`` (torch derives a lower factor of ``J^-1`` from it);
- ``lift`` (the library now): the prior's regression and conditional covariance once per
  distinct present set, then per row ``H S_q H^T + C``, two matrix products.

    .venv/bin/python benchmarks/completion.py [--quick] [--json PATH] [--threads N]
"""

from __future__ import annotations

import contextlib

import torch
from torch.distributions import kl_divergence

from _common import interleaved, markdown_table, parse_cpu_benchmark, print_header, step_summary, write_json
from pyro_mcvae.distributions import GMRF, complete_from_prior
from pyro_mcvae.models.gmrf import GMRFPrior

BENCHMARK = "completion"


def precision_route(loc, covariance, present, prior, d):
    """The completion through its precision (the library's code until 2026-11-26)."""
    a = present.repeat_interleave(d, -1).to(loc.dtype)
    outer = a.unsqueeze(-1) * a.unsqueeze(-2)
    pad = torch.diag_embed(1.0 - a)
    mu_p, cov_p, prec_p = prior.loc, prior._covariance_unbroadcast(), prior._precision_unbroadcast()
    lam = torch.cholesky_inverse(torch.linalg.cholesky(covariance * outer + pad)) * outer
    p_aa = torch.cholesky_inverse(torch.linalg.cholesky(cov_p * outer + pad)) * outer
    joint = prec_p + lam - p_aa
    joint = 0.5 * (joint + joint.transpose(-1, -2))
    h = lam @ (loc * a).unsqueeze(-1) + (prec_p - p_aa) @ mu_p.unsqueeze(-1)
    mean = torch.cholesky_solve(h, torch.linalg.cholesky(joint)).squeeze(-1)
    m = present.shape[-1]
    return GMRF(mean, precision_matrix=joint, num_components=m, component_dim=d, validate_args=False)


def make_case(batch: int, m: int, d: int, seed: int):
    torch.manual_seed(seed)
    prior_module = GMRFPrior(m, d, "precision", standardized=True, init_shared=d // 2)
    with torch.no_grad():
        prior_module.offdiag.add_(0.05 * torch.randn_like(prior_module.offdiag))
        prior_module.loc.normal_(0, 0.3)
    raw = torch.randn(2 * batch, m * d, m * d) / (m * d) ** 0.5
    base = (raw @ raw.transpose(-1, -2) + 0.2 * torch.eye(m * d)).requires_grad_()
    loc = torch.randn(2 * batch, m * d, requires_grad=True)
    given = torch.zeros(batch, m, dtype=torch.bool)
    given[torch.arange(batch), torch.randint(m, (batch,))] = True
    present = torch.cat([torch.ones(batch, m, dtype=torch.bool), given])
    return prior_module, base, loc, present


def posterior_covariance(base, present, d):
    """``base`` without couplings between present and absent coordinates (as the guide builds it)."""
    a = present.repeat_interleave(d, -1)
    return base * (a.unsqueeze(-1) == a.unsqueeze(-2))


def step(route, prior_module, base, loc, present, d):
    """One forward and backward pass: completion, KL to the prior, one draw."""
    prior = prior_module()
    q = route(loc, posterior_covariance(base, present, d), present, prior, d)
    loss = kl_divergence(q, prior).sum() + q.rsample().pow(2).sum()
    loss.backward()
    return q


def main(argv=None):
    args, device, default_threads = parse_cpu_benchmark(__doc__, argv, "this benchmark measures the CPU step")
    batch, m, d = (16, 5, 4) if args.quick else (128, 5, 16)
    reps = args.reps or (3 if args.quick else 7)
    info = print_header(BENCHMARK, args, device, default_threads,
                        extra=f", batch 2 x {batch}, M {m}, d {d}")
    prior_module, base, loc, present = make_case(batch, m, d, args.seed)
    routes = {"precision (before)": precision_route, "lift (now)": complete_from_prior}
    with torch.no_grad():
        prior, cov = prior_module(), posterior_covariance(base, present, d)
        laws = [route(loc, cov, present, prior, d) for route in routes.values()]
        mean_diff = float((laws[0].mean - laws[1].mean).abs().max())
        cov_diff = float((laws[0].covariance_matrix - laws[1].covariance_matrix).abs().max())
        cov_size = float(laws[1].covariance_matrix.abs().max())
    print(f"agreement: largest |mean difference| {mean_diff:.2e}, |covariance difference| {cov_diff:.2e} "
          f"(largest covariance entry {cov_size:.2f})")
    if not (mean_diff < 1e-3 * max(1.0, cov_size) and cov_diff < 1e-3 * cov_size):
        raise SystemExit("the two routes disagree: the comparison would be meaningless")
    alternatives = {name: (contextlib.nullcontext,
                           lambda route=route: step(route, prior_module, base, loc, present, d))
                    for name, route in routes.items()}
    times = interleaved(alternatives, reps=reps, inner=1, warmup=1, device=device)
    names = list(routes)
    summary = step_summary(times, names)
    rows = [[name, f"{s['ms_median']:.1f}", f"{s['ms_q1']:.1f}-{s['ms_q3']:.1f}",
             f"{1 / s['ratio']:.2f}x"] for name, s in summary.items()]
    print(markdown_table(["route", "ms (median)", "IQR", f"speed-up ratio vs {names[0]}"], rows))
    if args.json:
        write_json(args.json, BENCHMARK, args, info,
                   {"routes": summary, "agreement": {"mean": mean_diff, "covariance": cov_diff},
                    "settings": {"batch": 2 * batch, "M": m, "d": d, "reps": reps}})


if __name__ == "__main__":
    main()
