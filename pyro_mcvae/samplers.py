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
  :meth:`LatentSampler.generate` decodes like :meth:`MCVAE.sample`;
- :class:`AnchoredMixture` and :func:`fit_anchored_sampler` (block-latent models with a Gaussian
  prior: the GMRF, the independent-Gaussian "diagonal"): one modality's block drawn from a
  mixture fitted to that block's encodings, the other blocks from the prior's closed-form
  conditional given it, the anchoring modality drawn uniformly. A joint mixture reproduces the
  encodings, and with them every encoder's own mistakes (on PolyMNIST a decoded encoding renders
  the right digit in 30-88% of modalities, so all five rarely agree); the anchored law asks of the
  prior only what conditional generation asks of it, given one modality.
"""

from __future__ import annotations

import math
import warnings

import torch

from .distributions.gmrf import GMRF, as_gmrf
from .models.base import MCVAE
from .models.layouts import BlockGuide
from .validation import check_finite

__all__ = ["AnchoredMixture", "GaussianMixture", "LatentSampler", "anchoring_problem", "encode_latents",
           "fit_anchored_sampler", "fit_latent_sampler"]

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


class AnchoredMixture:
    """A density over ``M`` blocks of size ``d`` (flat ``(M*d,)``): with probability ``w_k`` block
    ``k`` is drawn from ``mixtures[k]`` and the other blocks from ``prior``'s conditional given it,

    ``p(z) = sum_{k in A} w_k g_k(z_k) p(z_{-k} | z_k)``,  ``p(z_{-k} | z_k) = p(z) / p(z_k)``.

    ``prior``: a :class:`~pyro_mcvae.distributions.GMRF` over the ``M*d`` vector, unbatched; the
    law is held and drawn in float64 (draws come back in ``dtype``). ``mixtures``: ``{k:
    GaussianMixture}`` fitted to block ``k`` (``d`` columns). ``weights`` ``w``: uniform over the
    anchors until :meth:`fit_weights`. ``seed`` seeds the default generator.
    """

    def __init__(self, prior: GMRF, mixtures: dict, dtype=torch.float32, seed: int = 0):
        if not isinstance(prior, GMRF) or prior.batch_shape != ():
            raise ValueError("prior must be an unbatched GMRF over the flat latent")
        if not mixtures:
            raise ValueError("give at least one anchoring block's mixture")
        m, d = prior.num_components, prior.component_dim
        for k, mixture in mixtures.items():
            if not 0 <= k < m:
                raise ValueError(f"anchor {k} is not a block of the {m}-block latent")
            mixture._check_fitted()
            if mixture.means.shape[1] != d:
                raise ValueError(f"the mixture of block {k} has {mixture.means.shape[1]} columns, the blocks {d}")
        self.prior = GMRF(prior.loc.detach().double(), covariance_matrix=prior._covariance_unbroadcast().detach().double(),
                          num_components=m, component_dim=d, validate_args=False)
        self.mixtures = dict(sorted(mixtures.items()))
        self.anchors = list(self.mixtures)
        self.weights = torch.full((len(self.anchors),), 1.0 / len(self.anchors), dtype=torch.float64,
                                  device=self.prior.loc.device)
        self.dtype = dtype
        self._generator = torch.Generator(device=self.prior.loc.device).manual_seed(int(seed))

    def _block(self, z: torch.Tensor, k: int) -> torch.Tensor:
        d = self.prior.component_dim
        return z[:, k * d:(k + 1) * d]

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(n, M*d)`` draws: the anchor of each draw, then its block, then the rest."""
        n = _positive_int(n, "n")
        g = self._generator if generator is None else generator
        dev = self.prior.loc.device
        m, d = self.prior.num_components, self.prior.component_dim
        pick = torch.multinomial(self.weights.to(g.device), n, replacement=True, generator=g).to(dev)
        out = torch.empty(n, m * d, dtype=torch.float64, device=dev)
        for i, k in enumerate(self.anchors):  # one batched draw per anchor (M at most)
            rows = (pick == i).nonzero().squeeze(-1)
            if rows.numel() == 0:
                continue
            z_k = self.mixtures[k].sample(rows.numel(), g).to(dev, torch.float64)
            rest = self.prior.condition({k: z_k})
            eps = torch.randn(rows.numel(), (m - 1) * d, generator=g, dtype=torch.float64, device=g.device).to(dev)
            z_rest = rest.loc + (rest.scale_tril @ eps.unsqueeze(-1)).squeeze(-1)
            others = [j for j in range(m) if j != k]
            full = torch.empty(rows.numel(), m, d, dtype=torch.float64, device=dev)
            full[:, k] = z_k
            full[:, others] = z_rest.reshape(-1, m - 1, d)
            out[rows] = full.flatten(1)
        return out.to(self.dtype)

    def _anchor_log_probs(self, z: torch.Tensor) -> torch.Tensor:
        """``(N, |A|)``: ``log g_k(z_k) + log p(z_{-k} | z_k)`` in float64."""
        if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[1] != self.prior.event_shape[0]:
            raise ValueError(f"z must be a tensor (N, {self.prior.event_shape[0]}), got "
                             f"{tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__}")
        z64 = z.to(self.prior.loc.device, torch.float64)
        joint = self.prior.log_prob(z64)
        return torch.stack([self.mixtures[k].log_prob(self._block(z64, k)).to(torch.float64) + joint
                            - self.prior.marginal([k]).log_prob(self._block(z64, k)) for k in self.anchors], -1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``(N,)`` log density at ``z`` ``(N, M*d)``, computed in float64."""
        return torch.logsumexp(self._anchor_log_probs(z) + self.weights.log(), -1).to(z.dtype)

    def fit_weights(self, z: torch.Tensor, max_iter: int = 200, tol: float = 1e-8) -> "AnchoredMixture":
        """The anchor weights of maximum likelihood on ``z`` ``(N, M*d)`` (EM over the weights
        alone: the mixtures and the prior stay fixed); returns ``self``. The anchor whose block,
        through the prior's conditional, best explains the other blocks gets the most weight."""
        check_finite(z, "z")
        terms = self._anchor_log_probs(z)
        weights = torch.full_like(self.weights, 1.0 / len(self.anchors))
        for _ in range(_positive_int(max_iter, "max_iter")):
            resp = torch.softmax(terms + weights.log(), -1)
            new = resp.mean(0)
            done = float((new - weights).abs().max()) < tol
            weights = new
            if done:
                break
        self.weights = weights
        return self


class LatentSampler:
    """A density over a model's decoder latents (see :func:`fit_latent_sampler`,
    :func:`fit_anchored_sampler`); ``mixture``: the density (``sample``, ``log_prob``)."""

    def __init__(self, model: MCVAE, mixture):
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


def anchoring_problem(model: MCVAE) -> str | None:
    """Why :func:`fit_anchored_sampler` cannot serve ``model`` (one line), or None when it can: it
    needs one latent block per component and a Gaussian prior to condition in closed form."""
    if not isinstance(model.guide, BlockGuide):
        return (f"the anchored sampler needs a block-latent model (one latent block per component: "
                f"gmrf, diagonal), got the guide {type(model.guide).__name__}")
    try:
        as_gmrf(model.prior(), model.guide.num_components, model.guide.latent_dim)
    except ValueError as err:
        return f"the anchored sampler conditions the prior in closed form: {err}"
    return None


def fit_anchored_sampler(model: MCVAE, data, num_components: int = 10, anchors=None, covariance: str = "full",
                         use_mean: bool = True, batch_size: int = 1024, seed: int = 0, max_iter: int = 100,
                         tol: float = 1e-3, reg: float = 1e-6, n_init: int = 1,
                         weights: str = "uniform") -> LatentSampler:
    """An :class:`AnchoredMixture` for a block-latent model with a Gaussian prior: a mixture of
    ``num_components`` fitted to each anchoring block's encodings of ``data`` (``anchors``: block
    indices, all by default), the other blocks from the model's prior conditioned on the anchor,
    as conditional generation from one modality draws them. ``weights``: ``"uniform"`` over the
    anchors, or ``"fitted"`` (maximum likelihood on the same encodings,
    :meth:`AnchoredMixture.fit_weights`). Returns a :class:`LatentSampler`."""
    if weights not in ("uniform", "fitted"):
        raise ValueError(f"weights must be 'uniform' or 'fitted', got {weights!r}")
    reason = anchoring_problem(model)
    if reason is not None:
        raise ValueError(reason)
    m, d = model.guide.num_components, model.guide.latent_dim
    prior = as_gmrf(model.prior(), m, d)
    anchors = list(range(m)) if anchors is None else sorted(set(int(k) for k in anchors))
    bad = [k for k in anchors if not 0 <= k < m]
    if bad:  # before the encoding, the costly part
        raise ValueError(f"anchor {bad[0]} is not one of the model's {m} components")
    latents = encode_latents(model, data, use_mean, batch_size, seed)
    check_finite(latents, "the encoded latents")
    mixtures = {}
    for k in anchors:
        mixture = GaussianMixture(num_components, covariance, max_iter, tol, reg, seed + k, n_init)
        mixtures[k] = mixture.fit(latents[:, k * d:(k + 1) * d].detach())
    density = AnchoredMixture(prior, mixtures, dtype=latents.dtype, seed=seed)
    if weights == "fitted":
        density.fit_weights(latents.detach())
    return LatentSampler(model, density)
