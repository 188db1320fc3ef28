"""What caps a trained PolyMNIST model's unconditional coherence, and which latent sampler lifts it
(docs/results/polymnist.md, "Unconditional generation from the anchored mixture").

For the model of a finished run of ``examples/polymnist.py`` (its ``<out>/<model>`` folder), on
``--tuples`` test tuples and the encodings (posterior means) of ``--fit-tuples`` training tuples,
under MoPoE-VAE's judges:

- the **reconstruction cap**: the test tuples' own posterior means decoded: how often all ``M``
  decoded images agree (the coherence a sampler that reproduced the encodings exactly would
  reach), and how often each modality's decoded image shows the tuple's label;
- the encodings themselves decoded (training posterior means; one posterior draw each);
- the prior; joint Gaussian mixtures of ``--components`` sizes (full and diagonal covariances);
- the anchored mixture (:func:`pyro_mcvae.samplers.fit_anchored_sampler`), anchored on each
  modality alone and on all of them (uniform and fitted weights).

    python benchmarks/polymnist_samplers.py --run results/polymnist-cpu/gmrf [--tuples 2000]
        [--fit-tuples 10000] [--components 10 50] [--json PATH]

Needs the PolyMNIST data (``--data-dir``) and MoPoE-VAE's classifiers (``--judges``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import check_polymnist_dirs, polymnist_run_parser  # noqa: E402
from pyro_mcvae import load_model  # noqa: E402
from pyro_mcvae.data.polymnist import load_polymnist  # noqa: E402
from pyro_mcvae.metrics.coherence import predict_digits, unconditional_coherence  # noqa: E402
from pyro_mcvae.nets.classifier import load_mopoe_classifiers  # noqa: E402
from pyro_mcvae.provenance import provenance  # noqa: E402
from pyro_mcvae.samplers import GaussianMixture, LatentSampler, encode_latents, fit_anchored_sampler  # noqa: E402


def parse(argv=None):
    p = polymnist_run_parser(__doc__, 2000, "test tuples, and tuples generated per sampler")
    p.add_argument("--fit-tuples", type=int, default=10000, help="training tuples whose encodings are fitted")
    p.add_argument("--components", type=int, nargs="+", default=[10, 50], help="mixture sizes")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse(argv)
    torch.set_grad_enabled(False)
    check_polymnist_dirs(args)
    model = load_model(Path(args.run) / "train")
    train = load_polymnist(args.data_dir, "train", cache=True)
    test = load_polymnist(args.data_dir, "test", cache=True)
    judges = load_mopoe_classifiers(args.judges, range(train.images.shape[1]))
    n = min(args.tuples, len(test))
    g = torch.Generator().manual_seed(args.seed)
    idx = torch.randperm(len(train), generator=g)[:args.fit_tuples]

    def flat(images):
        return [x.float().div(255).flatten(1) for x in images.unbind(1)]

    def images(parts):
        return torch.stack([p.reshape(p.shape[0], *test.images.shape[2:]) for p in parts], 1).clamp(0, 1)

    def coherence(parts):
        return round(unconditional_coherence(images(parts), judges), 4)

    def generated(sampler, seed):
        return coherence(sampler.generate(n, generator=torch.Generator().manual_seed(seed)))

    t0 = time.perf_counter()
    out = {"run": str(args.run), "tuples": n, "fit_tuples": len(idx)}
    recon = images(model.decode(encode_latents(model, flat(test.images[:n])), False))
    out["reconstruction_coherence"] = round(unconditional_coherence(recon, judges), 4)
    right = predict_digits(judges, recon) == test.labels[:n, None]
    out["reconstruction_digit_rate"] = [round(float(v), 4) for v in right.double().mean(0)]
    tr = flat(train.images[idx])
    z = encode_latents(model, tr)
    pick = torch.randint(len(idx), (n,), generator=g)
    out["training_means_decoded"] = coherence(model.decode(z[pick], False))
    out["training_draws_decoded"] = coherence(model.decode(encode_latents(model, tr, False, seed=1)[pick], False))
    torch.manual_seed(args.seed)
    out["prior"] = coherence(model.sample(n))
    for k in args.components:
        for cov in ("full", "diag"):
            mixture = GaussianMixture(k, cov, seed=args.seed).fit(z.double())
            out[f"joint_mixture_{k}_{cov}"] = generated(LatentSampler(model, mixture), args.seed + 3)
        for w in ("uniform", "fitted"):
            sampler = fit_anchored_sampler(model, tr, num_components=k, seed=args.seed, weights=w)
            out[f"anchored_{k}_{w}"] = generated(sampler, args.seed + 3)
            out[f"anchored_{k}_{w}_weights"] = [round(float(v), 4) for v in sampler.mixture.weights]
        for a in range(len(tr)):
            out[f"anchored_{k}_on_m{a}"] = generated(fit_anchored_sampler(model, tr, num_components=k, anchors=[a],
                                                                          seed=args.seed), args.seed + 3)
        print(json.dumps({key: v for key, v in out.items() if key.startswith(("joint_mixture_" + str(k),
                                                                               f"anchored_{k}"))}), flush=True)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({"provenance": provenance(), "results": out}, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
