"""Which modality a block-latent PolyMNIST model fails on: the digit rate from each given
modality to each generated one (docs/results/polymnist.md, "32 coordinates per modality").

For the model of a finished run of ``examples/polymnist.py`` (its ``<out>/<model>`` folder) and
``--tuples`` test tuples: for each modality ``k`` given alone, its block from its encoder (the
posterior mean) and every other block from the prior's conditional law given it, decoded, and
each decoded image judged by MoPoE-VAE's classifier of its modality. Printed: the ``M x M``
matrix of how often the image of modality ``j`` (column) shows the tuple's digit when ``k``
(row) is given (the diagonal is ``k``'s own reconstruction), with the other blocks at the
conditional law's mean and at one draw from it, and the row means over ``j != k`` (the
coherence from one given modality, per given modality). A row far below the others names an
encoder that does not put the digit into its block; a column, a decoder that does not render it.

    python benchmarks/polymnist_cross_digits.py --run results/polymnist-cpu/gmrf [--tuples 1000]
        [--json PATH]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import check_polymnist_dirs, polymnist_run_parser  # noqa: E402
from pyro_mcvae import load_model  # noqa: E402
from pyro_mcvae.data.polymnist import load_polymnist  # noqa: E402
from pyro_mcvae.distributions import as_gmrf  # noqa: E402
from pyro_mcvae.metrics.coherence import predict_digits  # noqa: E402
from pyro_mcvae.models.base import ConditionablePrior  # noqa: E402
from pyro_mcvae.nets.classifier import load_mopoe_classifiers  # noqa: E402
from pyro_mcvae.provenance import provenance  # noqa: E402


def parse(argv=None):
    return polymnist_run_parser(__doc__, 1000, "test tuples").parse_args(argv)


def digit_matrix(model, xs: list[torch.Tensor], labels: torch.Tensor, judges, draw: bool) -> list[list[float]]:
    """``M x M`` digit rates: row ``k`` given alone, column ``j`` generated (see the module)."""
    m, d = model.num_components, model.latent_dim
    prior = model.prior()
    if not isinstance(prior, ConditionablePrior):
        prior = as_gmrf(prior, m, d)
    shape = xs[0].shape[0], 3, 28, 28
    rows = []
    for k in range(m):
        z_k = model.guide._observed_latent([xs[k]], [k], True)[:, 0]
        law = prior.condition({k: z_k})
        rest = law.sample() if draw else law.mean
        z = z_k.new_empty(z_k.shape[0], m, d)
        z[:, k] = z_k
        z[:, [j for j in range(m) if j != k]] = rest.reshape(z_k.shape[0], m - 1, d)
        images = torch.stack([p.reshape(shape) for p in model.decode(z.flatten(-2), False)], 1).clamp(0, 1)
        right = predict_digits(judges, images) == labels[:, None]
        rows.append([round(float(v), 4) for v in right.double().mean(0)])
    return rows


def main(argv=None) -> dict:
    args = parse(argv)
    torch.set_grad_enabled(False)
    check_polymnist_dirs(args)
    model = load_model(Path(args.run) / "train")
    if not hasattr(model.guide, "_observed_latent"):
        sys.exit(f"{args.run}: a block-latent model (one block per modality) is needed")
    test = load_polymnist(args.data_dir, "test", cache=True)
    n = min(args.tuples, len(test))
    judges = load_mopoe_classifiers(args.judges, range(test.images.shape[1]))
    xs = [x.float().div(255).flatten(1) for x in test.images[:n].unbind(1)]
    torch.manual_seed(args.seed)
    out = {"run": str(args.run), "tuples": n}
    for name, draw in (("conditional_mean", False), ("conditional_draw", True)):
        matrix = digit_matrix(model, xs, test.labels[:n], judges, draw)
        m = len(matrix)
        given = [round(sum(r[j] for j in range(m) if j != k) / (m - 1), 4) for k, r in enumerate(matrix)]
        out[name] = {"matrix": matrix, "one_given_by_modality": given, "one_given": round(sum(given) / m, 4)}
        print(f"{name}: given k (rows) -> generated j (columns)")
        for k, r in enumerate(matrix):
            print(f"  m{k}: " + " ".join(f"{v:.3f}" for v in r) + f"   others {given[k]:.3f}")
        print(f"  one given, mean over k: {out[name]['one_given']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"provenance": provenance(), "results": out}, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
