"""The PolyMNIST GMRF diagnosis (docs/results/polymnist.md): what carries the digit across
modalities, measured during training and for the prior alone.

    # train the GMRF on all 60,000 tuples (MLPs 512-512, latent 16, Laplace 0.75, batch 128) and
    # every N steps record: linear digit probes on each block's posterior mean, the probe applied
    # to the prior's conditional mean E[z_j | z_i] ("through the prior"), canonical correlations of
    # blocks 0 and 1 (prior, posterior means, aggregate posterior), coherence from one modality
    # and unconditional coherence (MoPoE-VAE judges, 1,000 test tuples)
    python benchmarks/polymnist_alignment.py train --out results/align/paper --beta 1
    python benchmarks/polymnist_alignment.py train --out results/align/std --prior-form standardized --prior-lr 1e-2
    python benchmarks/polymnist_alignment.py train --out results/align/shared --prior-form standardized \\
        --prior-init-shared 8 --prior-lr 1e-9          # prior held (nearly) fixed at a shared structure

    # freeze a trained run's encoders and fit only a prior to the KL: how close each prior form
    # gets to the aggregate posterior (KL(aggregate || prior), nats)
    python benchmarks/polymnist_alignment.py fit-prior --run results/align/std --prior-form paper --prior-lr 1e-3
    python benchmarks/polymnist_alignment.py fit-prior --run results/align/std --prior-form standardized --prior-lr 1e-2

    # the same measurements on a model trained by the example (its <out>/<model> folder)
    python benchmarks/polymnist_alignment.py measure --run results/polymnist-cpu/gmrf   # or mmvae: reconstructions

Needs the PolyMNIST data (``python -m pyro_mcvae.data.polymnist data/polymnist``) and MoPoE-VAE's
classifiers (../shared/data/polymnist/mopoe_classifiers, or --judges).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pyro_mcvae.data.mnist import find_data_root  # noqa: E402
from pyro_mcvae.data.polymnist import load_polymnist  # noqa: E402
from pyro_mcvae.evaluate import image_latent_sampler_scores  # noqa: E402
from pyro_mcvae.infer import LearningCurve, TrainConfig, fit, load_checkpoint  # noqa: E402
from pyro_mcvae.metrics.alignment import canonical_correlations, linear_probe, sample_canonical_correlations  # noqa: E402
from pyro_mcvae.metrics.coherence import conditional_coherence, unconditional_coherence  # noqa: E402
from pyro_mcvae.models import build_model  # noqa: E402
from pyro_mcvae.nets.classifier import load_mopoe_classifiers  # noqa: E402
from pyro_mcvae.provenance import provenance  # noqa: E402
from pyro_mcvae.samplers import encode_latents  # noqa: E402

M, SHAPE = 5, (3, 28, 28)


def build(args):
    torch.manual_seed(args.seed)
    std = args.prior_form == "standardized"
    return build_model("gmrf", [3 * 28 * 28] * M, block_dim=args.latent, hidden=(512, 512), likelihood="laplace",
                       scale=args.scale, offdiag_keep=args.keep, prior_standardized=std,
                       prior_init_shared=args.prior_init_shared if std else 0)


def flat(images):
    return [images[:, k].flatten(1).float() / 255 for k in range(M)]


def alignment(model, probe_x, probe_y, eval_x, eval_y, judges, d):
    """Every measurement of the diagnosis, for the model as it is now."""
    res = {}
    guide = model.guide
    mean_train, _ = guide.encode(probe_x)  # (N, M, d)
    mean_eval, var_eval = guide.encode(eval_x)
    probes = [linear_probe(mean_train[:, k], probe_y) for k in range(M)]
    res |= {f"probe_block{k}": probes[k].accuracy(mean_eval[:, k], eval_y) for k in range(M)}
    prior = model.prior()
    cov = prior.covariance_matrix.double()
    block0, block1 = list(range(d)), list(range(d, 2 * d))
    res |= {f"prior_cc{r}": v for r, v in enumerate(canonical_correlations(cov, block0, block1)[:4].tolist())}
    res |= {f"posterior_means_cc{r}": v
            for r, v in enumerate(sample_canonical_correlations(mean_train[:, 0], mean_train[:, 1])[:4].tolist())}
    q = guide._posterior([x[:2000] for x in probe_x])
    aggregate = q.covariance_matrix.double().mean(0) + torch.cov(q.loc.double().T)
    res |= {f"aggregate_cc{r}": v for r, v in enumerate(canonical_correlations(aggregate, block0, block1)[:4].tolist())}
    res["posterior_var"] = float(var_eval.mean())
    res["posterior_mean_var"] = float(mean_train.var(0).mean())
    through = []
    for i in range(M):
        loc = prior.condition({i: mean_eval[:, i]}).loc.reshape(len(eval_y), M - 1, d)
        rest = [j for j in range(M) if j != i]
        through.append(sum(probes[j].accuracy(loc[:, r], eval_y) for r, j in enumerate(rest)) / (M - 1))
    res["probe_through_prior"] = sum(through) / M
    res |= reconstruction(model, eval_x, eval_y, judges)
    coherence = []
    for i in range(M):
        gen = torch.stack([x[0].reshape(-1, *SHAPE) for x in model.condition({i: eval_x[i]})], 1).clamp(0, 1)
        coherence.append(conditional_coherence(gen, eval_y, judges, [i]))
    res["coherence_1"] = sum(coherence) / M
    draws = torch.stack([x.reshape(-1, *SHAPE) for x in model.sample(len(eval_y))], 1).clamp(0, 1)
    res["unconditional"] = unconditional_coherence(draws, judges)
    return res


def reconstruction(model, eval_x, eval_y, judges) -> dict:
    """The judges' accuracy on each modality's reconstruction from the posterior means (any
    model: ``encode_latents`` and ``decode``), and the share of tuples with all ``M`` right:
    conditional and unconditional generation carry no more of the digit than the decoders render."""
    recon = [r.reshape(-1, *SHAPE).clamp(0, 1) for r in model.decode(encode_latents(model, eval_x))]
    right = torch.stack([judges[k](recon[k]).argmax(-1) == eval_y for k in range(M)])
    res = {f"reconstruction_block{k}": float(right[k].float().mean()) for k in range(M)}
    return res | {"reconstruction_all_blocks": float(right.all(0).float().mean())}


def load_data(args):
    train = load_polymnist(args.data_dir, "train", range(M), cache=True, progress=False)
    test = load_polymnist(args.data_dir, "test", range(M), cache=True, progress=False)
    return train, test


def judges_dir(args) -> str:
    if args.judges:
        return args.judges
    root = find_data_root()
    if root is None or not (root / "polymnist" / "mopoe_classifiers").is_dir():
        raise SystemExit("MoPoE-VAE classifiers not found: pass --judges DIR")
    return str(root / "polymnist" / "mopoe_classifiers")


def train(args):
    train_data, test = load_data(args)
    judges = load_mopoe_classifiers(judges_dir(args))
    model = build(args)
    probe_x, probe_y = flat(train_data.images[:5000]), train_data.labels[:5000]
    eval_x, eval_y = flat(test.images[:1000]), test.labels[:1000]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "settings.json").write_text(json.dumps(provenance("cpu") | {"settings": vars(args)}, indent=2, default=str))
    beta = args.beta if ":" in args.beta else float(args.beta)
    config = TrainConfig(epochs=args.epochs, batch_size=128, lr=1e-3, prior_lr=args.prior_lr, beta=beta, seed=args.seed)
    fn = lambda model, epoch: alignment(model, probe_x, probe_y, eval_x, eval_y, judges, args.latent)  # noqa: E731
    images = [train_data.images[:args.num_train, k] for k in range(M)]
    fit(model, images, config, out_dir=out / "train", progress=not args.no_progress,
        batch_transform=lambda xs: [x.flatten(1).float() / 255 for x in xs],
        callbacks=[LearningCurve(fn, out / "alignment.csv", every_steps=args.eval_every)])
    print((out / "alignment.csv").read_text())


def fit_prior(args):
    """Encoders of ``--run`` frozen; a prior of ``--prior-form`` fitted to the batch KL by Adam."""
    from torch.distributions import kl_divergence

    from pyro_mcvae.distributions import GMRF

    settings = json.loads((Path(args.run) / "settings.json").read_text())["settings"]
    model = build(argparse.Namespace(**(settings | {"prior_form": settings["prior_form"]})))
    state = load_checkpoint(Path(args.run) / "train" / "checkpoint.pt")["model"]
    model.load_state_dict(state)
    model.eval()
    train_data, _ = load_data(args)
    x = flat(train_data.images[:3000])
    with torch.no_grad():
        q = model.guide._posterior(x)
    loc, cov = q.loc.detach(), q.covariance_matrix.detach()
    aggregate = cov.double().mean(0) + torch.cov(loc.double().T)
    fresh = build(argparse.Namespace(**(settings | {"prior_form": args.prior_form, "prior_init_shared": 0})))
    prior = fresh.prior
    if args.start_from_run and args.prior_form == settings["prior_form"]:
        prior.load_state_dict({k[len("prior."):]: v for k, v in state.items() if k.startswith("prior.")})
    optim = torch.optim.Adam(prior.parameters(), lr=args.prior_lr)
    gen = torch.Generator().manual_seed(0)
    chol_a = torch.linalg.cholesky(aggregate)

    def kl_to_aggregate():
        with torch.no_grad():
            p = prior().covariance_matrix.double()
            chol = torch.linalg.cholesky(p)
            return float(0.5 * (torch.cholesky_solve(aggregate, chol).diagonal().sum() + 2 * chol.diagonal().log().sum()
                                - 2 * chol_a.diagonal().log().sum() - aggregate.shape[0]))

    d = settings["latent"]
    for step in range(args.steps + 1):
        idx = torch.randint(0, len(loc), (128,), generator=gen)
        batch = GMRF(loc[idx], covariance_matrix=cov[idx], num_components=M, component_dim=d)
        loss = kl_divergence(batch, prior()).mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
        if step % args.every == 0:
            cc = canonical_correlations(prior().covariance_matrix.detach().double(), range(d), range(d, 2 * d))
            print(json.dumps({"step": step, "batch_kl": round(float(loss), 3),
                              "kl_aggregate_to_prior": round(kl_to_aggregate(), 3),
                              "prior_cc": [round(v, 3) for v in cc[:4].tolist()]}), flush=True)
    cc = canonical_correlations(aggregate, range(d), range(d, 2 * d))
    print(json.dumps({"aggregate_cc": [round(v, 3) for v in cc[:4].tolist()]}))


def measure(args):
    """The diagnosis's measurements on a model trained by ``examples/polymnist.py``."""
    import dataclasses

    from pyro_mcvae.experiments.polymnist import PolyMNISTRun, build_polymnist_model
    from pyro_mcvae.experiments.runner import restore

    folder = Path(args.run)
    settings = json.loads((folder / "results.json").read_text())["settings"]
    fields = {f.name for f in dataclasses.fields(PolyMNISTRun)}
    run = PolyMNISTRun(**{k: v for k, v in settings.items() if k in fields})
    model = restore(build_polymnist_model(run), folder / "train", "cpu")
    train_data, test = load_data(args)
    judges = load_mopoe_classifiers(judges_dir(args))
    torch.manual_seed(0)
    eval_x, eval_y = flat(test.images[:1000]), test.labels[:1000]
    with torch.no_grad():
        if run.model == "gmrf":
            res = alignment(model, flat(train_data.images[:5000]), train_data.labels[:5000], eval_x, eval_y, judges,
                            settings["latent_dim"])
        else:  # the block-latent measures need the GMRF's blocks and prior; the reconstructions do not
            res = reconstruction(model, eval_x, eval_y, judges)
    for k in args.mixtures:  # unconditional coherence from latent mixtures fitted to training encodings
        scores = image_latent_sampler_scores(model, train_data.images[:10000].float() / 255,
                                             test.images[:2000].float() / 255, {"mopoe": judges}, k, seed=3)
        res[f"mixture{k}_unconditional"] = scores["unconditional_coherence"]["mopoe"]
    print(json.dumps({k: round(v, 3) for k, v in res.items()}))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--out", required=True)
    t.add_argument("--beta", default="1.0")
    t.add_argument("--latent", type=int, default=16)
    t.add_argument("--scale", type=float, default=0.75)
    t.add_argument("--keep", type=float, default=0.25)
    t.add_argument("--epochs", type=int, default=2)
    t.add_argument("--eval-every", type=int, default=235)
    t.add_argument("--prior-form", choices=["paper", "standardized"], default="paper")
    t.add_argument("--prior-lr", type=float, default=None)
    t.add_argument("--prior-init-shared", type=int, default=0)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--num-train", type=int, default=None, help="training tuples (default: all)")
    t.add_argument("--no-progress", action="store_true")
    f = sub.add_parser("fit-prior")
    f.add_argument("--run", required=True)
    f.add_argument("--prior-form", choices=["paper", "standardized"], default="standardized")
    f.add_argument("--prior-lr", type=float, default=1e-2)
    f.add_argument("--steps", type=int, default=1500)
    f.add_argument("--every", type=int, default=300)
    f.add_argument("--start-from-run", action="store_true", help="start from the run's trained prior")
    g = sub.add_parser("measure", help="the measurements on a model trained by examples/polymnist.py (other "
                                       "models than the GMRF: the reconstructions only)")
    g.add_argument("--run", required=True, help="<out>/<model> of the example's run")
    g.add_argument("--mixtures", type=int, nargs="*", default=[],
                   help="also the unconditional coherence (2,000 test tuples) of Gaussian mixtures with these "
                        "numbers of components fitted to 10,000 training encodings")
    for p in (t, f, g):
        p.add_argument("--data-dir", default=str(ROOT / "data" / "polymnist"))
        p.add_argument("--judges", default=None)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    {"train": train, "fit-prior": fit_prior, "measure": measure}[args.command](args)
    print(f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
