"""Evaluators: run a trained model's generation and score it. Separate from the models."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from .data import CopulaDataset, copula_spearman, sample_copula
from .metrics import (conditional_copula_metrics, copula_metrics, noise_floor, quantile_errors, slice_metrics,
                      spearman_error)

__all__ = ["evaluate_components", "evaluate_copula", "evaluate_heavy_tails", "evaluate_nongaussian", "evaluate_polymnist", "copula_noise_floor",
           "generate_copula", "generate_images", "heavy_tail_noise_floor", "heavy_tail_population",
           "image_latent_sampler_scores", "latent_sampler_scores", "likelihood_scores", "nongaussian_noise_floor"]


def _stack(parts: list[torch.Tensor]) -> np.ndarray:
    """``M`` tensors ``(..., J)`` to an array ``(..., M, J)``."""
    return torch.stack([p.detach().cpu() for p in parts], dim=-2).numpy()


@torch.no_grad()
def generate_copula(model, dataset, device="cpu", sample_likelihood: bool = False) -> dict:
    """Unconditional draws (as many as test tuples) and, for each source component ``k``, one
    conditional draw per test tuple with component ``k`` observed. Arrays ``(n, M, J)``.

    ``sample_likelihood``: draw ``x ~ p(x | z)`` instead of taking the decoder mean. A model whose
    components share one small latent needs the likelihood's noise to produce each component's
    own variation; the decoder mean makes them functions of the same ``z``.
    """
    test = torch.as_tensor(dataset.test, device=device)
    n, m = test.shape[0], test.shape[1]
    out = {"unconditional": _stack(model.sample(n, sample_likelihood)), "conditional": {}}
    for k in range(m):
        parts = model.condition({k: test[:, k]}, num_samples=1, sample_likelihood=sample_likelihood)
        out["conditional"][k] = _stack([p[0] for p in parts])
    return out


def copula_noise_floor(dataset: CopulaDataset, population_n: int = 20000) -> dict:
    """Each metric between two independent true samples: what sampling noise alone gives."""
    floor = noise_floor(dataset.test, dataset.reference)
    big = sample_copula(population_n, seed=dataset.seed + 10_000, num_components=dataset.num_components,
                        num_coordinates=dataset.num_coordinates, rho=dataset.rho,
                        mean=dataset.mean, std=dataset.std)
    target = copula_spearman(dataset.num_components, dataset.num_coordinates, dataset.rho)
    floor["spearman_population_error"] = spearman_error(big.reshape(population_n, -1), target)
    floor["population_n"] = population_n
    return floor


@torch.no_grad()
def evaluate_copula(model, dataset: CopulaDataset, device="cpu", population_n: int = 20000,
                    sample_likelihood: bool = False) -> dict:
    """Every copula number for one trained model.

    ``unconditional``/``conditional``: W1 (and marginal W1, Spearman) against the held-out test
    tuples, with as many generated tuples as test tuples. ``spearman_population_error``: the
    largest error of the Spearman matrix of ``population_n`` generated tuples against the
    copula's population value, which sampling noise affects far less than the sample-to-sample
    comparison.
    """
    model.eval()
    gen = generate_copula(model, dataset, device, sample_likelihood)
    big = _stack(model.sample(population_n, sample_likelihood)).reshape(population_n, -1)
    target = copula_spearman(dataset.num_components, dataset.num_coordinates, dataset.rho)
    return {
        "unconditional": copula_metrics(gen["unconditional"], dataset.test),
        "conditional": conditional_copula_metrics(gen["conditional"], dataset.test),
        "spearman_population_error": spearman_error(big, target),
        "samples": gen,
    }


TAIL_LEVELS = (0.01, 0.99)


def heavy_tail_population(dataset, n: int, offset: int):
    """``n`` fresh true tuples of the dataset's law, from seed ``dataset.seed + offset``."""
    from .data import sample_skew_t

    return sample_skew_t(n, dataset.seed + offset, num_components=dataset.num_components,
                         num_coordinates=dataset.num_coordinates, rho=dataset.rho, df=dataset.df,
                         skew=dataset.skew)


def heavy_tail_noise_floor(dataset, reference: np.ndarray, population_n: int = 20000) -> dict:
    """The heavy-tail metrics between two independent true samples: W1 of test against
    reference tuples; quantile errors of ``population_n`` fresh true tuples against the large
    true ``reference`` sample (the comparison the models get)."""
    floor = noise_floor(dataset.test, dataset.reference)
    floor["quantile_errors"] = quantile_errors(heavy_tail_population(dataset, population_n, 10_000),
                                               reference, TAIL_LEVELS)
    floor["population_n"] = population_n
    return floor


@torch.no_grad()
def evaluate_heavy_tails(model, dataset, reference: np.ndarray, device="cpu", population_n: int = 20000,
                         sample_likelihood: bool = True) -> dict:
    """Joint W1 against the test tuples (unconditional and conditional on each single component,
    as for the copula) and the 1% / 99% quantile errors of ``population_n`` generated tuples
    against ``reference``, a large true sample (the test set's own extreme quantiles are too
    noisy for heavy tails)."""
    gen, big, scores = _joint_scores(model, dataset, device, population_n, sample_likelihood)
    return scores | {"quantile_errors": quantile_errors(big, reference, TAIL_LEVELS),
                     "samples": gen | {"population": big}}


def _joint_scores(model, dataset, device, population_n: int, sample_likelihood: bool):
    """``(generated, population, scores)``: the copula protocol's generations from the test
    tuples, ``population_n`` unconditional draws, and joint W1 unconditional and conditional on
    each single component against the test tuples."""
    model.eval()
    gen = generate_copula(model, dataset, device, sample_likelihood)
    big = _stack(model.sample(population_n, sample_likelihood))
    return gen, big, {"unconditional": copula_metrics(gen["unconditional"], dataset.test),
                      "conditional": conditional_copula_metrics(gen["conditional"], dataset.test)}


# -- likelihoods and post-hoc latent samplers (every model, any tuples) -------------------------------

def likelihood_scores(model, xs, num_samples: int = 1000, seed: int = 0, batch_size: int = 256,
                      chunk: int = 100) -> dict:
    """Importance-sampled log-likelihoods of ``xs`` (``(N, M, D)`` or ``M`` tensors ``(N, D_k)``),
    each model's own estimator (:mod:`pyro_mcvae.metrics.likelihood`, with its defensive share of
    prior draws), ``K = num_samples``:

    - ``joint``: ``log p(x_1..x_M)`` from the full posterior, a stochastic lower bound;
    - ``marginal[k]``: ``log p(x_k)`` from the subset posterior of ``k``, likewise;
    - ``conditional[k]``: ``log p(x_rest | x_k)``, the joint minus the marginal moved up by twice
      its estimated Jensen gap (``conditional_by_difference``): first-order bias negative, about
      ``-se^2 / 2``;
    - ``conditional_ratio[k]``: the same quantity by the ratio estimator on draws from the subset
      posterior of ``k`` (first-order bias negative too). Where ``x_rest`` pins the latents far
      more than that proposal does, its numerator's weights degenerate (small ``min_ess``) and
      it runs far low at practical ``K``;
    - ``conditional_mean`` and ``conditional_ratio_mean``: averages over the given ``k``.

    Nats per tuple. Each value is a summary (mean over the tuples, its standard error over data,
    the Monte Carlo error, NaN when some tuple's effective sample size is below the estimator's
    ``min_ess``, the count of such tuples in ``unreliable``, the smallest effective sample size).
    A prior without a normalised density (the NN-MRF) gives ``{"skipped": reason}``.
    """
    from .metrics.likelihood import conditional_by_difference, conditional_log_likelihood, log_likelihood
    from .models.base import MCMCPrior, SelfSamplingPrior

    if isinstance(model.prior, (SelfSamplingPrior, MCMCPrior)):
        return {"skipped": f"{type(model.prior).__name__} is an unnormalised energy: no importance-sampled "
                           "likelihood"}
    m = model.num_components
    options = dict(batch_size=batch_size, chunk=chunk)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the summaries count the tuples of tiny ESS
        joint = log_likelihood(model, xs, num_samples, seed=seed, **options)
        marginal = {k: log_likelihood(model, xs, num_samples, components=[k], seed=seed + 1 + k, **options)
                    for k in range(m)}
        ratio = {k: conditional_log_likelihood(model, xs, [k], [j for j in range(m) if j != k], num_samples,
                                               "ratio", seed=seed + 1 + m + k, **options) for k in range(m)}
        difference = {k: conditional_by_difference(joint, [mk]) for k, mk in marginal.items()}
        # mean over k of log p^(x) - U_k: the joint's error enters once, not averaged away
        difference_mean = conditional_by_difference(joint, list(marginal.values()))
    return {"joint": joint.summary(), "marginal": {k: e.summary() for k, e in marginal.items()},
            "conditional": {k: e.summary() for k, e in difference.items()},
            "conditional_mean": difference_mean.summary(),
            "conditional_ratio": {k: e.summary() for k, e in ratio.items()},
            "conditional_ratio_mean": _average(list(ratio.values())).summary()}


def _average(estimates: list):
    """The mean over independent estimates of the same data (errors in quadrature)."""
    from .metrics.likelihood import LikelihoodEstimate

    n = len(estimates)
    stack = {name: torch.stack([getattr(e, name) for e in estimates])
             for name in ("per_datum", "std_error", "ess", "variance")}
    return LikelihoodEstimate(stack["per_datum"].mean(0), stack["std_error"].pow(2).sum(0).sqrt() / n,
                              stack["ess"].amin(0), estimates[0].num_samples, stack["variance"].sum(0) / n**2,
                              estimates[0].min_ess)


def latent_sampler_scores(model, train, test, num_components=(1, 10), protocols=None, seed: int = 0) -> dict:
    """Joint generation from a Gaussian mixture fitted to the posterior means of the ``train``
    tuples (:func:`~pyro_mcvae.samplers.fit_latent_sampler`) instead of the prior, scored as the
    copula's unconditional generation: joint W1 and marginal W1 against ``test`` (``(n, M, J)``),
    with ``n`` generated tuples.

    ``num_components``: the mixture sizes to fit (one component: a single Gaussian fitted to the
    encodings, the GMRF prior's own family). ``protocols``: name -> draw ``x ~ p(x | z)`` (else
    the decoder mean); default ``{"sample": True, "mean": False}``. Returns
    ``{c: {protocol: metrics}}``.
    """
    from .samplers import fit_latent_sampler

    protocols = {"sample": True, "mean": False} if protocols is None else protocols
    test = np.asarray(test)
    out = {}
    for c in num_components:
        sampler = fit_latent_sampler(model, train, num_components=c, seed=seed)
        out[c] = {}
        for i, (protocol, sample_likelihood) in enumerate(protocols.items()):
            generator = torch.Generator().manual_seed(seed + i)
            out[c][protocol] = copula_metrics(_stack(sampler.generate(test.shape[0], sample_likelihood, generator)),
                                              test)
    return out


def image_latent_sampler_scores(model, train_images: torch.Tensor, test_images: torch.Tensor, judges: dict,
                                num_components: int = 10, seed: int = 0, batch_size: int = 500,
                                device="cpu") -> dict:
    """Unconditional image generation from a Gaussian mixture fitted to the posterior means of
    ``train_images`` (``(N, M, C, H, W)`` in [0, 1]) instead of the prior: coherence under each
    judge (``{name: classifiers}``) and the digit-feature Frechet distance (the first judge's
    classifiers) per modality against ``test_images``, with as many generated tuples as test
    tuples. For a block-latent model with a Gaussian prior (the GMRF) also the anchored mixture
    (:func:`~pyro_mcvae.samplers.fit_anchored_sampler`: one modality's block from a mixture fitted
    to its encodings, the others from the prior's conditional), under ``"anchored"``. Returns
    ``{"num_components", "unconditional_coherence": {judge: value}, "digit_fd_unconditional",
    "num_generated"[, "anchored": {"unconditional_coherence", "digit_fd_unconditional"}]}``."""
    from .metrics.coherence import unconditional_coherence
    from .metrics.fid import digit_features, frechet_distance, gaussian_statistics
    from .samplers import anchoring_problem, fit_anchored_sampler, fit_latent_sampler

    shape = tuple(test_images.shape[2:])
    flat = [x.flatten(1) for x in train_images.unbind(1)]
    first = next(iter(judges.values()))
    n = test_images.shape[0]
    test_features = [gaussian_statistics(digit_features(first[j], test_images[:, j], batch_size=1000))
                     for j in range(test_images.shape[1])]

    def scores(sampler) -> dict:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            generated = torch.cat([_as_images(sampler.generate(min(batch_size, n - i), generator=generator), shape)
                                   for i in range(0, n, batch_size)])
        fd = [frechet_distance(*test_features[j], *gaussian_statistics(digit_features(first[j], generated[:, j],
                                                                                       batch_size=1000)))
              for j in range(generated.shape[1])]
        return {"unconditional_coherence": {name: unconditional_coherence(generated, classifiers)
                                            for name, classifiers in judges.items()},
                "digit_fd_unconditional": float(np.mean(fd))}

    out = {"num_components": num_components, "num_generated": n}
    out |= scores(fit_latent_sampler(model, flat, num_components=num_components, seed=seed, batch_size=batch_size))
    if anchoring_problem(model) is None:  # not for shared latents or the ALMRF's non-Gaussian prior
        out["anchored"] = scores(fit_anchored_sampler(model, flat, num_components=num_components, seed=seed,
                                                      batch_size=batch_size))
    return out


# -- components of any sizes (your own data) ----------------------------------------------------

@torch.no_grad()
def evaluate_components(model, test: list[torch.Tensor], train_means: list[torch.Tensor] | None = None,
                        likelihood_samples: int = 100, conditional_samples: int = 10, seed: int = 0
                        ) -> tuple[dict, dict]:
    """Held-out scores of a trained model on ``M`` components of any sizes, ``test``: ``M``
    tensors ``(n, D_k)``, every component present.

    - ``reconstruction_mse[k]``: mean squared error of the decoder mean from all components;
    - ``given_others_mse[k]``: of component ``k`` predicted from all the others (the mean of
      ``conditional_samples`` conditional draws of the decoder mean; for Bernoulli components the
      Brier score); ``train_mean_mse[k]``: predicting the training mean instead, the floor a
      model that learned no dependence reaches;
    - ``unconditional_w1``: exact W1 between ``n`` prior draws (decoder means) and the test rows,
      all components concatenated;
    - ``likelihood`` (``likelihood_samples = K > 0``): :func:`likelihood_scores` (joint, each
      component's marginal, the rest given each one) and ``given_others[k]``: ``log p(x_k | x_rest)``
      (:func:`~pyro_mcvae.metrics.likelihood.conditional_log_likelihood`), nats per row.

    Returns ``(metrics, generated)``, ``generated``: NumPy arrays ``(n, D_k)`` per component under
    ``"reconstruction"``, ``"given_others"`` and ``"unconditional"``.
    """
    from .metrics.likelihood import conditional_log_likelihood
    from .metrics.wasserstein import wasserstein_joint

    model.eval()
    m, n = len(test), test[0].shape[0]

    def mse(parts):
        return {k: float((p - x).pow(2).mean()) for k, (p, x) in enumerate(zip(parts, test))}

    generated = {"reconstruction": model.reconstruct(test), "unconditional": model.sample(n)}
    metrics = {"num_rows": n, "reconstruction_mse": mse(generated["reconstruction"])}
    if m > 1:
        predicted = [model.condition({j: test[j] for j in range(m) if j != k},
                                     num_samples=conditional_samples)[k].mean(0) for k in range(m)]
        generated["given_others"] = predicted
        metrics["given_others_mse"] = mse(predicted)
    if train_means is not None:
        metrics["train_mean_mse"] = mse([mu.to(x).expand_as(x) for mu, x in zip(train_means, test)])
    metrics["unconditional_w1"] = wasserstein_joint(torch.cat(generated["unconditional"], 1).cpu().double(),
                                                    torch.cat(test, 1).cpu().double())
    if likelihood_samples:
        scores = likelihood_scores(model, test, likelihood_samples, seed=seed)
        if m > 1 and "skipped" not in scores:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # the summaries count tuples of tiny ESS
                scores["given_others"] = {
                    k: conditional_log_likelihood(model, test, [j for j in range(m) if j != k], [k],
                                                  likelihood_samples, seed=seed + 3 * m + 2 * k).summary()
                    for k in range(m)}
        metrics["likelihood"] = scores
    return metrics, {key: [p.detach().cpu().numpy() for p in parts] for key, parts in generated.items()}


# -- non-Gaussian copulas (X, Student-t) ---------------------------------------------------------

def nongaussian_noise_floor(dataset, reference: np.ndarray, population_n: int = 20000, window=None) -> dict:
    """The non-Gaussian benchmark's metrics between independent true samples: joint W1 of the test
    against the reference split, and the slice W1 (:func:`~pyro_mcvae.metrics.slice_metrics`) of
    ``population_n`` fresh true tuples against ``reference``, a large true sample (the
    comparison the models get)."""
    from .data import nongaussian_population

    floor = noise_floor(dataset.test, dataset.reference)
    fresh = nongaussian_population(dataset, population_n, 20_000)
    floor["slice"] = slice_metrics(fresh, reference, *(() if window is None else (window,)))
    floor["population_n"] = population_n
    return floor


@torch.no_grad()
def evaluate_nongaussian(model, dataset, reference: np.ndarray, device="cpu", population_n: int = 20000,
                         sample_likelihood: bool = False, window=None) -> dict:
    """Joint W1 against the test tuples (unconditional, and conditional on each single component,
    as for the copula) and the slice W1 of ``population_n`` generated tuples against
    ``reference``, a large true sample: the law of the other components where one component lies
    in ``window`` (quantile levels; default the metric's, off the X's crossing)."""
    gen, big, scores = _joint_scores(model, dataset, device, population_n, sample_likelihood)
    return scores | {"slice": slice_metrics(big, reference, *(() if window is None else (window,))),
                     "samples": gen}


# -- images (PolyMNIST) -----------------------------------------------------------------------

def _proper_subsets(m: int, sizes=None) -> list[tuple[int, ...]]:
    import itertools

    sizes = range(1, m) if sizes is None else sizes
    return [c for s in sizes for c in itertools.combinations(range(m), s)]


def _as_images(parts: list[torch.Tensor], shape) -> torch.Tensor:
    """``M`` flat tensors ``(n, D)`` to images ``(n, M, *shape)`` clamped to [0, 1] on the CPU."""
    return torch.stack([p.reshape(p.shape[0], *shape) for p in parts], 1).clamp_(0, 1).cpu()


@torch.no_grad()
def generate_images(model, images: torch.Tensor, subsets=None, num_unconditional: int | None = None,
                    batch_size: int = 500, device="cpu", progress: bool = False, keep=None) -> dict:
    """Generation from a trained image model, as the coherence, SSIM and FID protocols need.

    Args:
        images: test tuples ``(N, M, C, H, W)``, floats in [0, 1].
        subsets: observed subsets to condition on (default: every non-empty proper subset).
        num_unconditional: prior draws (default ``N``).

    Returns:
        ``{"unconditional": (n, M, C, H, W), "conditional": {subset: (N, M, C, H, W)}}``: in a
        conditional tuple the observed slots hold the given images; the decoders' means, clamped
        to [0, 1]. ``keep(subset, generated)``: called with each subset's generations as they
        are made; those for which it returns False are not kept (streaming evaluation: memory
        for the kept subsets only).
    """
    from tqdm.auto import tqdm

    model.eval()
    n, m = images.shape[:2]
    shape = images.shape[2:]
    subsets = _proper_subsets(m) if subsets is None else [tuple(sorted(s)) for s in subsets]
    out = {"conditional": {}}
    count = n if num_unconditional is None else int(num_unconditional)
    draws = [_as_images(model.sample(min(batch_size, count - i)), shape) for i in range(0, count, batch_size)]
    out["unconditional"] = torch.cat(draws)
    for subset in tqdm(subsets, desc="conditional generation", disable=not progress, leave=False):
        chunks = []
        for i in range(0, n, batch_size):
            batch = images[i:i + batch_size].to(device)
            observed = {k: batch[:, k].flatten(1) for k in subset}
            chunks.append(_as_images([p[0] for p in model.condition(observed, num_samples=1)], shape))
        generated = torch.cat(chunks)
        if keep is None or keep(subset, generated):
            out["conditional"][subset] = generated
    return out


def single_source_ssim(images: torch.Tensor, conditional: dict) -> dict:
    """SSIM of every modality generated from one other modality against the true image of the
    same tuple: ``{"mean", "per_source": {k: mean over the targets j != k}}`` (``conditional``:
    ``{subset: (N, M, C, H, W)}``; only its single-source entries are read)."""
    from .metrics.ssim import ssim

    m = images.shape[1]
    per_source = {}
    for k in range(m):
        g = conditional.get((k,))
        if g is not None:
            targets = [j for j in range(m) if j != k]
            per_source[k] = float(torch.stack([ssim(g[:, j], images[:, j]) for j in targets]).mean())
    return {"mean": float(np.mean(list(per_source.values()))) if per_source else float("nan"),
            "per_source": per_source}


def evaluate_polymnist(model, images: torch.Tensor, labels: torch.Tensor, classifiers, subsets=None,
                       inception=None, batch_size: int = 500, device="cpu", progress: bool = False,
                       generated: dict | None = None, coherence: dict | None = None,
                       ssim_scores: dict | None = None) -> dict:
    """Coherence, SSIM and Fréchet distances of a trained PolyMNIST model (protocol in
    ``docs/results/polymnist.md`` and :mod:`pyro_mcvae.metrics.coherence`).

    Args:
        images: test tuples ``(N, M, 3, 28, 28)`` in [0, 1]; labels ``(N,)``.
        classifiers: ``M`` digit classifiers (the coherence judges; their 128-d features also give
            the offline ``digit_fd``).
        subsets: conditioning subsets (default: all ``2^M - 2``).
        inception: an :class:`~pyro_mcvae.metrics.fid.InceptionFeatureExtractor` for FID, or
            ``None`` (FID not computed).
        generated: reuse the output of :func:`generate_images`.
        coherence: conditional coherence per subset already measured (``{subset: value}``, see
            :func:`evaluate_polymnist_judges`); ``generated`` then needs only the single-source
            subsets and the unconditional draws.
        ssim_scores: :func:`single_source_ssim` already computed (it does not depend on the judge).

    Returns a dict: ``conditional_coherence`` (per subset, by subset size and ``mean``),
    ``unconditional_coherence``; ``ssim`` between each modality generated from one other
    modality and the true image of the same tuple (mean, and per source); ``digit_fd`` and
    ``fid``: per modality ``j``, real test ``x_j`` against generated ``x_j`` (unconditional; and
    conditional, pooled over the single sources ``k != j``), averaged over ``j``.
    """
    from .metrics.coherence import coherence_by_subset_size, conditional_coherence, unconditional_coherence
    from .metrics.fid import digit_features, frechet_distance, gaussian_statistics

    n, m = images.shape[:2]
    if generated is None:
        generated = generate_images(model, images, subsets, batch_size=batch_size, device=device,
                                    progress=progress)
    conditional = generated["conditional"]
    if coherence is None:
        per_subset = {s: conditional_coherence(g, labels, classifiers, s) for s, g in conditional.items()}
    else:
        per_subset = {tuple(sorted(s)): float(v) for s, v in coherence.items()}
    complete = subsets is None and len(per_subset) == 2 ** m - 2
    by_size = coherence_by_subset_size(per_subset, m if complete else None)
    singles = [(k,) for k in range(m) if (k,) in conditional]
    out = {
        "num_tuples": n,
        "conditional_coherence": {"mean": by_size.pop("mean"), "by_size": by_size,
                                  "subsets": {",".join(map(str, s)): v for s, v in per_subset.items()}},
        "unconditional_coherence": unconditional_coherence(generated["unconditional"], classifiers),
    }
    out["ssim"] = single_source_ssim(images, conditional) if ssim_scores is None else ssim_scores

    def frechet(features):
        """``features(images, j)``: features ``(N, F)`` of modality ``j``; the real images' statistics
        are computed once per modality and serve both comparisons."""
        uncond, cond = [], []
        for j in range(m):
            real = gaussian_statistics(features(images[:, j], j))
            uncond.append(frechet_distance(*real, *gaussian_statistics(features(generated["unconditional"][:, j], j))))
            pooled = [conditional[(k,)][:, j] for (k,) in singles if k != j]
            if pooled:
                # As many generated images as real ones: an equal share from every source.
                pooled = torch.cat([p[i::len(pooled)] for i, p in enumerate(pooled)])
                cond.append(frechet_distance(*real, *gaussian_statistics(features(pooled, j))))
        return {"unconditional": float(np.mean(uncond)), "conditional": float(np.mean(cond)) if cond else None,
                "per_modality_unconditional": uncond}

    out["digit_fd"] = frechet(lambda x, j: digit_features(classifiers[j], x, batch_size=1000))
    out["fid"] = frechet(lambda x, j: inception(x)) if inception is not None else None
    return out


def evaluate_polymnist_judges(model, images: torch.Tensor, labels: torch.Tensor, judges: dict, inception=None,
                              batch_size: int = 500, device="cpu", progress: bool = False) -> tuple[dict, dict]:
    """:func:`evaluate_polymnist` under several judges (``{name: classifiers}``) from one
    generation, streamed: each subset's generations are judged as they are made and only the
    single-source ones are kept (``M`` of the ``2^M - 2`` subsets: 10,000 test tuples fit in
    memory). FID (with ``inception``) is computed once, under the first judge's entry.

    Returns ``({name: metrics}, generated)`` (``generated``: the single-source and unconditional
    images, for figures and sample files)."""
    from .metrics.coherence import conditional_coherence

    per_subset = {name: {} for name in judges}

    def judge(subset, generated):
        for name, classifiers in judges.items():
            per_subset[name][subset] = conditional_coherence(generated, labels, classifiers, subset)
        return len(subset) == 1

    generated = generate_images(model, images, batch_size=batch_size, device=device, progress=progress, keep=judge)
    similarity = single_source_ssim(images, generated["conditional"])
    metrics = {name: evaluate_polymnist(model, images, labels, classifiers, generated=generated,
                                        coherence=per_subset[name], inception=inception if i == 0 else None,
                                        device=device, ssim_scores=similarity)
               for i, (name, classifiers) in enumerate(judges.items())}
    return metrics, generated
