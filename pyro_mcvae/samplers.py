"""Post-hoc latent samplers for joint generation.

Drawing ``z`` from the prior gives poor joint coherence when the aggregate posterior (the
encodings of the training data) does not fill the prior; a density fitted to those encodings
("ex-post density estimation") draws latents where the decoders were trained. This module fits
a Gaussian mixture to the latents a model's decoders read and decodes draws from it:

- :class:`GaussianMixture`: EM for a full- or diagonal-covariance mixture, pure torch, seeded
  (k-means++ seeding and k-means from a ``torch.Generator``);
- :func:`fit_latent_sampler`: encodes data with ``model.guide.reconstruction_latent`` (the
  latent ``MCVAE.decode`` takes: ``M*d`` blocks for GMRF/ALMRF/diagonal, the shared ``z`` for
  MVAE/MMVAE/MoPoE, ``z`` and the private ``w_k`` concatenated for MMVAE+) and fits the mixture;
  :meth:`LatentSampler.generate` decodes like :meth:`MCVAE.sample`.
"""

from __future__ import annotations

import math
import warnings

import torch

from .models.base import MCVAE
from .validation import check_finite

__all__ = ["GaussianMixture", "LatentSampler", "encode_latents", "fit_latent_sampler"]

_COVARIANCES = ("full", "diag")


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


class GaussianMixture:
    """Gaussian mixture fitted by EM.

    ``num_components``: number of mixture components ``K``; ``covariance``: ``"full"``
    (``covariances`` is ``(K, D, D)``) or ``"diag"`` (``(K, D)``); ``reg``: added to every
    covariance's diagonal (keeps it positive definite); EM stops when the mean log-likelihood
    (``lower_bound``) changes by less than ``tol`` or after ``max_iter`` iterations; ``n_init``
    initialisations are run and the one with the highest bound kept; ``seed`` seeds the
    initialisation and, by default, :meth:`sample`. Fitting runs in float64; the parameters are
    stored in float64, draws and log densities come back in the fitted data's dtype.
    """

    def __init__(self, num_components: int = 1, covariance: str = "full", max_iter: int = 100,
                 tol: float = 1e-3, reg: float = 1e-6, seed: int = 0, n_init: int = 1):
        self.num_components = _positive_int(num_components, "num_components")
        if covariance not in _COVARIANCES:
            raise ValueError(f"covariance must be one of {_COVARIANCES}, got {covariance!r}")
        self.covariance = covariance
        self.max_iter = _positive_int(max_iter, "max_iter")
        self.n_init = _positive_int(n_init, "n_init")
        if not (tol >= 0 and math.isfinite(tol)):
            raise ValueError(f"tol must be a finite non-negative number, got {tol!r}")
        if not (reg >= 0 and math.isfinite(reg)):
            raise ValueError(f"reg must be a finite non-negative number, got {reg!r}")
        self.tol, self.reg, self.seed = float(tol), float(reg), int(seed)
        self.weights = self.means = self.covariances = None
        self.converged, self.n_iter, self.lower_bound = False, 0, -math.inf
        self._generator = None
        self.dtype = None

    # -- checks --------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if self.weights is None:
            raise RuntimeError("GaussianMixture is not fitted; call fit(x) first")

    def _check_data(self, x, name: str = "x") -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() != 2:
            raise ValueError(f"{name} must be a floating-point tensor (N, D), got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}"
                             f"{' ' + str(x.dtype) if isinstance(x, torch.Tensor) else ''}")
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"{name} must be non-empty, got shape {tuple(x.shape)}")
        check_finite(x, name)
        return x

    # -- EM --------------------------------------------------------------------------------------
    def _component_log_prob(self, x, means, covariances) -> torch.Tensor:
        """``(N, K)``: ``log N(x_n | mu_k, Sigma_k)`` (Cholesky for the full case)."""
        diff = x.unsqueeze(1) - means  # (N, K, D)
        dim = x.shape[-1]
        if self.covariance == "diag":
            maha = (diff.square() / covariances).sum(-1)
            logdet = covariances.log().sum(-1)
        else:
            chol, info = torch.linalg.cholesky_ex(covariances)
            if bool((info > 0).any()):
                raise ValueError("a mixture covariance is not positive definite; raise reg")
            # solve L y = diff for every (n, k): (K, D, N)
            y = torch.linalg.solve_triangular(chol, diff.permute(1, 2, 0), upper=False)
            maha = y.square().sum(-2).T  # (N, K)
            logdet = 2 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        return -0.5 * (dim * math.log(2 * math.pi) + logdet + maha)

    def _m_step(self, x, resp):
        counts = resp.sum(0)  # (K,)
        safe = counts.clamp_min(torch.finfo(x.dtype).tiny)
        weights = counts / x.shape[0]
        means = (resp.T @ x) / safe.unsqueeze(-1)
        diff = x.unsqueeze(1) - means  # (N, K, D)
        if self.covariance == "diag":
            covariances = torch.einsum("nk,nkd->kd", resp, diff.square()) / safe.unsqueeze(-1) + self.reg
        else:
            covariances = torch.einsum("nk,nkd,nke->kde", resp, diff, diff) / safe[:, None, None]
            covariances = covariances + self.reg * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
        return weights, means, covariances

    def _e_step(self, x, weights, means, covariances):
        joint = self._component_log_prob(x, means, covariances) + weights.log()  # log 0 = -inf is fine
        norm = torch.logsumexp(joint, -1)
        return (joint - norm.unsqueeze(-1)).exp(), float(norm.mean())

    def _kmeans_init(self, x, generator, lloyd_steps: int = 30) -> torch.Tensor:
        """Hard responsibilities ``(N, K)``: greedy k-means++ seeding (each new seed is the best
        of ``2 + log K`` candidates drawn with probability proportional to the squared distance)
        refined by Lloyd's k-means iterations."""
        n, k = x.shape[0], self.num_components
        first = int(torch.randint(n, (1,), generator=generator, device=x.device))
        centers = [x[first]]
        nearest = (x - x[first]).square().sum(-1)
        trials = 2 + int(math.log(k))
        for _ in range(1, k):
            total = nearest.sum()
            if float(total) > 0:
                cand = torch.multinomial(nearest / total, trials, replacement=True, generator=generator)
            else:  # every point sits on a seed already: any will do
                cand = torch.randint(n, (trials,), generator=generator, device=x.device)
            dist = torch.minimum(nearest, torch.cdist(x[cand], x).square())  # (trials, N)
            best = int(dist.sum(-1).argmin())
            centers.append(x[cand[best]])
            nearest = dist[best]
        centers = torch.stack(centers)
        labels = torch.cdist(x, centers).argmin(-1)
        for _ in range(lloyd_steps):
            onehot = torch.nn.functional.one_hot(labels, k).to(x.dtype)
            counts = onehot.sum(0)
            moved = (onehot.T @ x) / counts.clamp_min(1).unsqueeze(-1)
            centers = torch.where(counts.unsqueeze(-1) > 0, moved, centers)  # an empty cluster keeps its seed
            new = torch.cdist(x, centers).argmin(-1)
            if torch.equal(new, labels):
                break
            labels = new
        return torch.nn.functional.one_hot(labels, k).to(x.dtype)

    def fit(self, x: torch.Tensor) -> "GaussianMixture":
        """Fit to ``x`` of shape ``(N, D)``, ``N >= num_components``; returns ``self``."""
        x = self._check_data(x)
        if x.shape[0] < self.num_components:
            raise ValueError(f"num_components={self.num_components} exceeds the number of data "
                             f"points ({x.shape[0]})")
        self.dtype = x.dtype
        x = x.detach().to(torch.float64)
        generator = torch.Generator(device=x.device).manual_seed(self.seed)
        best = None
        for _ in range(self.n_init):
            params = self._m_step(x, self._kmeans_init(x, generator))
            bound, converged, n_iter = -math.inf, False, 0
            for n_iter in range(1, self.max_iter + 1):
                resp, new_bound = self._e_step(x, *params)
                params = self._m_step(x, resp)
                if abs(new_bound - bound) < self.tol:
                    bound, converged = new_bound, True
                    break
                bound = new_bound
            bound = self._e_step(x, *params)[1]  # the bound of the returned parameters
            if best is None or bound > best[0]:
                best = (bound, params, converged, n_iter)
        self.lower_bound, (self.weights, self.means, self.covariances), self.converged, self.n_iter = best
        if not self.converged:
            warnings.warn(f"GaussianMixture did not converge in {self.max_iter} iterations "
                          f"(tol={self.tol}); raise max_iter or tol", RuntimeWarning, stacklevel=2)
        self._generator = torch.Generator(device=x.device).manual_seed(self.seed)
        return self

    # -- use -------------------------------------------------------------------------------------
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``(N,)`` log density of the fitted mixture at ``x`` ``(N, D)``."""
        self._check_fitted()
        x = self._check_data(x)
        if x.shape[1] != self.means.shape[1]:
            raise ValueError(f"x must have {self.means.shape[1]} columns, got {x.shape[1]}")
        joint = self._component_log_prob(x.to(self.means), self.means, self.covariances) + self.weights.log()
        return torch.logsumexp(joint, -1).to(x.dtype)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(n, D)`` draws. ``generator``: defaults to the mixture's own, seeded with ``seed``
        at ``fit`` (successive calls continue its stream)."""
        self._check_fitted()
        n = _positive_int(n, "n")
        g = self._generator if generator is None else generator
        # The draws are made on the generator's device (a CPU generator gives the same numbers
        # whether the mixture lives on the CPU or a GPU), then moved to the mixture's.
        labels = torch.multinomial(self.weights.to(g.device), n, replacement=True, generator=g).to(self.means.device)
        eps = torch.randn(n, self.means.shape[1], generator=g, dtype=self.means.dtype,
                          device=g.device).to(self.means.device)
        if self.covariance == "diag":
            noise = eps * self.covariances[labels].sqrt()
        else:
            chol = torch.linalg.cholesky(self.covariances)
            noise = (chol[labels] @ eps.unsqueeze(-1)).squeeze(-1)
        return (self.means[labels] + noise).to(self.dtype)


class LatentSampler:
    """A density over a model's decoder latents (see :func:`fit_latent_sampler`)."""

    def __init__(self, model: MCVAE, mixture: GaussianMixture):
        self.model, self.mixture = model, mixture

    def _reference(self) -> torch.Tensor:
        return next(self.model.parameters())

    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(num_samples, latent size)`` latents on the model's device and dtype."""
        ref = self._reference()
        return self.mixture.sample(num_samples, generator).to(device=ref.device, dtype=ref.dtype)

    @torch.no_grad()
    def generate(self, num_samples: int, sample_likelihood: bool = False,
                 generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Joint generation: ``M`` tensors ``(num_samples, D_k)``, the decoder means (or a draw
        from the likelihood), as :meth:`MCVAE.sample` but with latents from the mixture."""
        return self.model.decode(self.sample(num_samples, generator), sample_likelihood)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self.mixture.log_prob(z)


@torch.no_grad()
def encode_latents(model: MCVAE, data, use_mean: bool = True, batch_size: int = 1024, seed: int = 0) -> torch.Tensor:
    """``(N, latent size)``: ``model.guide.reconstruction_latent`` on ``data`` (``M`` tensors
    ``(N, D_k)`` or one ``(N, M, D)``) in batches, with the model in eval mode (restored after).
    With ``use_mean=False`` the draws use the torch RNG seeded with ``seed`` (forked: the global
    stream is left as it was)."""
    xs = model.check_data(data)
    batch_size = _positive_int(batch_size, "batch_size")
    n = xs[0].shape[0]
    if n == 0:
        raise ValueError("data is empty")
    ref = next(model.parameters())
    devices = [ref.device] if ref.device.type == "cuda" else []
    training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            parts = [model.guide.reconstruction_latent([x[i:i + batch_size].to(ref) for x in xs], use_mean)
                     for i in range(0, n, batch_size)]
    finally:
        model.train(training)
    return torch.cat(parts)


def fit_latent_sampler(model: MCVAE, data, num_components: int = 10, covariance: str = "full",
                       use_mean: bool = True, batch_size: int = 1024, seed: int = 0, max_iter: int = 100,
                       tol: float = 1e-3, reg: float = 1e-6, n_init: int = 1) -> LatentSampler:
    """Fit a Gaussian mixture to the encodings of ``data`` (the latents the decoders read:
    posterior means, or one posterior draw with ``use_mean=False``) and return a
    :class:`LatentSampler`; ``sampler.generate(n)`` decodes ``n`` joint samples.

    Works for every registered model: the latent is whatever ``guide.reconstruction_latent``
    gives and ``model.decode`` takes (MMVAE+: the shared ``z`` and the private ``w_k`` jointly).
    """
    mixture = GaussianMixture(num_components, covariance, max_iter, tol, reg, seed, n_init)
    latents = encode_latents(model, data, use_mean, batch_size, seed)
    if latents.shape[0] < num_components:
        raise ValueError(f"num_components={num_components} exceeds the number of data points "
                         f"({latents.shape[0]})")
    check_finite(latents, "the encoded latents")
    return LatentSampler(model, mixture.fit(latents.flatten(1)))
