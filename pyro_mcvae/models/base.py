"""What every method shares: the interfaces the trainer and evaluators call, the model container
with generation, the encoder guide, and the common configuration.

A method (``gmrf.py``, ``mvae.py``, ...) is a prior, a guide and a model program over the
decoders defined here, plus a config dataclass and a registry entry (``registry.py``). The
trainer and the evaluators only use the interfaces below, so a new method needs nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence, runtime_checkable

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ..validation import check_component_indices, check_components, check_domains, check_mask, module_dtype
from ..nets import NetworkFactory, VectorEncoder, as_nets
from .checks import field_problems, positive_number, sizes
from .likelihoods import LIKELIHOODS, ComponentLikelihood

__all__ = [
    "CommonConfig",
    "MCMCPrior",
    "ConditionablePrior",
    "EncoderGuide",
    "LatentGuide",
    "MCVAE",
    "ProposalGuide",
    "SelfSamplingPrior",
    "check_no_beta",
]


# -- interfaces -----------------------------------------------------------------------------------
@runtime_checkable
class LatentGuide(Protocol):
    """What the evaluators ask of a guide."""

    def encode(self, xs, components=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Marginal posterior ``(loc, var)`` ``(batch, K, d)`` of the given components, each from
        its own data only."""

    def conditional_latent(self, prior, data, components, num_samples: int, use_mean: bool = True):
        """Latents ``(num_samples, batch, latent size)`` given the observed ``components``."""

    def reconstruction_latent(self, xs, use_mean: bool = True) -> torch.Tensor:
        """Latent ``(batch, latent size)`` from all components."""


@runtime_checkable
class ProposalGuide(Protocol):
    """A guide with its own importance-sampling proposal for likelihood estimates
    (:mod:`pyro_mcvae.metrics.likelihood`), when its training program is a poor one."""

    def proposal(self, xs, mask=None):
        """A Pyro program drawing the same latent sites as the guide program (same plates and
        strata), from a law whose density its sites give in full."""


@runtime_checkable
class SelfSamplingPrior(Protocol):
    """A prior module that draws its own samples (the NN-MRF's MCMC chains) instead of through
    the distribution it returns."""

    def sample(self, num_samples: int) -> torch.Tensor:
        """Draws ``(num_samples, latent size)``."""


@runtime_checkable
class ConditionablePrior(Protocol):
    """A prior law with exact or sampled conditioning on some blocks."""

    def condition(self, observed: Mapping[int, torch.Tensor]):
        """The law of the other blocks given ``{component: value (batch, d)}``."""


@runtime_checkable
class MCMCPrior(Protocol):
    """A prior sampled by MCMC during training, whose chains' health the trainer logs."""

    def diagnostics(self) -> dict:
        """R-hat, effective sample sizes, divergences, ... as plain numbers."""

    def inference_data(self, transitions: int = 0):
        """The chains' kept draws as ArviZ ``InferenceData`` (after ``transitions`` more)."""


def check_no_beta(beta) -> None:
    """The programs take no ``beta``: the objectives apply it (``pyro_mcvae.infer.objectives``)."""
    if beta is not None:
        raise ValueError("beta is applied by the objective, not by the model or guide programs: "
                         "train with pyro_mcvae.infer.objectives.objective_for(model) (or any objective there), "
                         "which takes beta as a keyword of loss/loss_and_grads")


# -- configuration --------------------------------------------------------------------------------
@dataclass
class CommonConfig:
    """Settings every method has. ``hidden``: MLP hidden sizes, or a network factory (e.g.
    :class:`~pyro_mcvae.nets.ResNetNets`) for every encoder and decoder. ``likelihood``: one kind
    for all components or one per component (``"normal"``, ``"laplace"``, ``"bernoulli"``).
    ``scale``: ``"learned"`` or a fixed positive likelihood scale."""

    hidden: object = (64, 64)
    likelihood: object = "normal"
    scale: object = "learned"

    def __post_init__(self):
        bad = self.problems()
        if bad:
            raise ValueError(f"{type(self).__name__}: bad setting{'s' if len(bad) > 1 else ''}: {'; '.join(bad)}")

    def problems(self) -> list[str]:
        """Every bad setting, as ``"<field> must be ..., got ..."`` (checked when the config is
        built; a subclass adds the checks of its own fields to ``super().problems()``)."""
        return field_problems(self, hidden=_network, likelihood=_likelihoods, scale=_scale)

    def likelihoods(self, component_dims: Sequence[int]) -> list[ComponentLikelihood]:
        m = len(component_dims)
        kinds = [self.likelihood] * m if isinstance(self.likelihood, str) else list(self.likelihood)
        if len(kinds) != m:
            raise ValueError(f"need one likelihood per component ({m}), got {len(kinds)}")
        return [ComponentLikelihood(k, int(dim), self.scale) for k, dim in zip(kinds, component_dims)]


def _network(value) -> str | None:
    if isinstance(value, NetworkFactory) or sizes(value) is None:
        return None
    return f"must be MLP hidden sizes (positive integers) or a network factory (MLPNets, ResNetNets), got {value!r}"


def _likelihoods(value) -> str | None:
    kinds = [value] if isinstance(value, str) else value
    ok = isinstance(kinds, Sequence) and len(kinds) > 0 and all(isinstance(k, str) and k in LIKELIHOODS for k in kinds)
    return None if ok else f"must be one of {LIKELIHOODS} or a list of them (one per component), got {value!r}"


def _scale(value) -> str | None:
    if (isinstance(value, str) and value == "learned") or positive_number(value) is None:
        return None
    return f"must be 'learned' or a positive number, got {value!r}"


# -- the guide's common part ----------------------------------------------------------------------
class EncoderGuide(nn.Module):
    """Per-component encoders and the guide program: ``z ~ q(z | x)`` in the ``data`` plate.

    Subclasses give :meth:`_posterior` (and, for latents other than one site ``z``,
    :meth:`_sample_latents`). ``prior``: the model's prior module, for guides that complete
    absent components from the prior conditioned on the present ones; it is a reference, not a
    submodule (Pyro registers a parameter under one name only; the model owns the prior).
    ``encoder_dim``: each encoder's output size (default ``latent_dim``).
    """

    def __init__(self, component_dims: Sequence[int], latent_dim: int, hidden=(64, 64),
                 min_var: float = 1e-4, prior: nn.Module | None = None, encoder_dim: int | None = None):
        super().__init__()
        self.component_dims = [int(c) for c in component_dims]
        self.num_components = len(self.component_dims)
        self.latent_dim = latent_dim
        # Each encoder's output size per component: the latent block, or more (MMVAE+: z and w_k).
        self.encoder = VectorEncoder(self.component_dims, encoder_dim or latent_dim, hidden, min_var)
        object.__setattr__(self, "prior_ref", prior)

    def encode(self, xs: Sequence[torch.Tensor], components: Sequence[int] | None = None):
        """Marginal posterior of the given components from their own data only: ``loc`` and
        diagonal variances ``(batch, K, d)``."""
        if components is None:
            xs = check_components(xs, self.component_dims, "data", True, *module_dtype(self))
        else:
            components = check_component_indices(components, self.num_components)
            xs = check_components(xs, [self.component_dims[k] for k in components], "data", True, *module_dtype(self))
        return self.encoder(xs, components)

    def posterior(self, xs) -> dist.Distribution:
        """``q(z | x)``, batch shape ``(batch,)``; ``xs`` is ``(batch, M, D)`` or ``M`` tensors."""
        return self._posterior(check_components(xs, self.component_dims, "data", False, *module_dtype(self)))

    def _posterior(self, xs: list[torch.Tensor], mask=None) -> dist.Distribution:
        raise NotImplementedError

    #: Whether :meth:`forward` takes ``copies > 1`` (see there); a guide that does overrides
    #: :meth:`_sample_copies`.
    encodes_copies_once: bool = False

    def forward(self, xs, mask=None, beta=None, copies: int = 1):
        """The guide program. ``mask``: optional bool ``(batch, M)``, False where absent.
        ``copies``: the batch is ``copies`` stacked copies of its first ``batch / copies`` rows,
        each copy with its own mask rows (the subset-posterior terms of
        :class:`~pyro_mcvae.infer.objectives.SubsetELBO`); a guide with
        ``encodes_copies_once`` then runs its networks once per distinct datum. The law is the
        same as without ``copies``."""
        check_no_beta(beta)
        pyro.module("guide", self)
        xs = check_components(xs, self.component_dims, "data", False, *module_dtype(self))
        batch = xs[0].shape[0]
        mask = check_mask(mask, batch, self.num_components)
        if copies != 1 and not (self.encodes_copies_once and isinstance(copies, int) and copies > 1
                                and batch % copies == 0):
            raise ValueError(f"copies={copies!r} needs a guide with encodes_copies_once and a batch ({batch}) "
                             f"that it divides; {type(self).__name__} has encodes_copies_once={self.encodes_copies_once}")
        with pyro.plate("data", batch, dim=-1):
            return self._sample_latents(xs, mask) if copies == 1 else self._sample_copies(xs, mask, copies)

    def _sample_copies(self, xs: list[torch.Tensor], mask, copies: int):
        raise NotImplementedError

    def _sample_latents(self, xs: list[torch.Tensor], mask):
        return pyro.sample("z", self._posterior(xs, mask))

    def reconstruction_latent(self, xs, use_mean: bool = True) -> torch.Tensor:
        """Latent ``(batch, latent size)`` from all components: the posterior mean or one draw."""
        q = self.posterior(xs)
        return q.mean if use_mean else q.sample()

    def conditional_latent(self, prior, data, components, num_samples: int, use_mean: bool = True):
        raise NotImplementedError

    @staticmethod
    def _present_only(loc, var, mask):
        """Encoder outputs ``(batch, M, d)`` with absent components' entries made inert."""
        here = mask.unsqueeze(-1)
        return torch.where(here, loc, torch.zeros_like(loc)), torch.where(here, var, torch.ones_like(var))


def has_absent(mask) -> bool:
    return mask is not None and not bool(mask.all())


def network_factory(hidden):
    """``hidden`` as a network factory (MLP sizes become :class:`~pyro_mcvae.nets.MLPNets`)."""
    return as_nets(hidden)


# -- the model ------------------------------------------------------------------------------------
class MCVAE(nn.Module):
    """A multi-component VAE: prior over the latents, one decoder and likelihood per component,
    and a guide. Subclasses write the generative program :meth:`model` (see ``layouts.py`` and
    ``mmvaeplus.py``) and say how latents feed the decoders (:meth:`_decoder_input`).

    ``model(xs, mask=None)`` and ``guide(xs, mask=None)`` are Pyro programs; train them with
    ``pyro_mcvae.infer.objectives.objective_for(model)`` (the method's default objective, named
    by ``default_objective``) or :func:`pyro_mcvae.infer.fit`.
    Attributes: ``component_dims``, ``num_components``, ``latent_dim`` (the size the decoders
    read per component), ``prior``, ``guide``, ``decoder``, ``likelihoods``, ``method`` and
    ``config`` (set by the registry).
    """

    method: str = "custom"
    default_objective: str = "meanfield"

    def __init__(self, component_dims, latent_dim, prior, guide, decoder, likelihoods, config=None):
        super().__init__()
        self.component_dims = [int(c) for c in component_dims]
        self.num_components = len(self.component_dims)
        self.latent_dim = int(latent_dim)
        if len(likelihoods) != self.num_components:
            raise ValueError(f"need one likelihood per component ({self.num_components}), got {len(likelihoods)}")
        self.prior, self.guide, self.decoder = prior, guide, decoder
        self.likelihoods = nn.ModuleList(likelihoods)
        self.config = config

    @classmethod
    def build(cls, component_dims: Sequence[int], latent_dim: int = 2, *, guide: str = "gmrf", **fields) -> "MCVAE":
        """A registered method, a shorthand for :func:`~pyro_mcvae.models.registry.build_model`:
        ``guide`` names the method (``"gmrf"``, ``"diagonal"``, ``"almrf"``, ``"nnmrf"``, ``"mvae"``,
        ``"mmvae"``, ``"mopoe"``, ``"mmvaeplus"`` or one you registered), ``latent_dim`` sets its
        latent size (the size per component of the block-latent methods, the shared size of the
        others: the method's ``latent_field``) and every other keyword is a field of the method's
        config (``hidden``, ``likelihood``, ``prior``, ``private_dim``, ...). A keyword the config
        does not have is refused in one error naming the config's fields; none is ignored."""
        from .registry import build_model, get_method

        latent = get_method(guide).latent_field
        if latent in fields:
            raise ValueError(f"give the latent size of {guide!r} as latent_dim, not {latent}")
        return build_model(guide, component_dims, **{latent: latent_dim}, **fields)

    # -- the program's pieces ---------------------------------------------------------------
    def _register(self) -> None:
        pyro.module("prior", self.prior)
        pyro.module("decoder", self.decoder)
        pyro.module("likelihoods", self.likelihoods)

    def _observe(self, z: torch.Tensor, xs: list[torch.Tensor], mask) -> None:
        """``x_k ~ p(x_k | z)`` for every component (absent ones masked out)."""
        params = self.decoder(self._decoder_input(z))
        for k, (lik, p) in enumerate(zip(self.likelihoods, params)):
            law = lik(p) if mask is None else lik(p).mask(mask[:, k])
            pyro.sample(f"x{k}", law, obs=xs[k])

    def _checked(self, xs, mask):
        xs = self.check_data(xs, check_values=False)
        return xs, check_mask(mask, xs[0].shape[0], self.num_components)

    def check_data(self, xs, name: str = "data", components: Sequence[int] | None = None,
                   check_values: bool = True) -> list[torch.Tensor]:
        """``xs`` (every component, or those listed in ``components``) as the model takes them: a
        list of tensors ``(batch, D_k)`` in the model's dtype, on its device (NumPy arrays and
        other floating dtypes are converted). ``check_values``: also refuse NaN, infinite values
        and values outside a likelihood's domain (Bernoulli: [0, 1]), naming the component."""
        comps = list(range(self.num_components)) if components is None else list(components)
        xs = check_components(xs, [self.component_dims[k] for k in comps], name, check_values, *module_dtype(self))
        if check_values:
            check_domains(xs, [self.likelihoods[k].domain for k in comps], name, labels=comps)
        return xs

    def model(self, xs, mask=None, beta=None):
        """The generative program ``z ~ p(z)``, ``x_k ~ p(x_k | z)`` (each decoder reads its part
        of ``z``, :meth:`_decoder_input`). ``mask``: optional bool ``(batch, M)``, False where a
        component is absent; its likelihood is left out (its data must still be finite)."""
        check_no_beta(beta)
        xs, mask = self._checked(xs, mask)
        self._register()
        prior = self.prior()  # outside the plate: an MCMC prior advances its chains here
        with pyro.plate("data", xs[0].shape[0], dim=-1):
            z = pyro.sample("z", prior)
            self._observe(z, xs, mask)

    def _decoder_input(self, z: torch.Tensor) -> torch.Tensor:
        """Latents ``(..., latent size)`` to decoder input ``(..., M, latent_dim)``."""
        raise NotImplementedError

    def _prior_draws(self, num_samples: int) -> torch.Tensor:
        if isinstance(self.prior, SelfSamplingPrior):
            return self.prior.sample(num_samples)
        return self.prior().sample((num_samples,))

    # -- generation -------------------------------------------------------------------------
    def decode(self, z: torch.Tensor, sample: bool = False) -> list[torch.Tensor]:
        """Decode latents to ``M`` tensors ``(..., D_k)``: the likelihood mean, or a draw."""
        params = self.decoder(self._decoder_input(z))
        if sample:
            return [lik(p).sample() for lik, p in zip(self.likelihoods, params)]
        return [lik.mean(p) for lik, p in zip(self.likelihoods, params)]

    @torch.no_grad()
    def sample(self, num_samples: int, sample_likelihood: bool = False) -> list[torch.Tensor]:
        """Unconditional generation: ``z ~ prior``; ``M`` tensors ``(num_samples, D_k)``."""
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        return self.decode(self._prior_draws(num_samples), sample_likelihood)

    @torch.no_grad()
    def reconstruct(self, xs, use_mean: bool = True, sample_likelihood: bool = False):
        """Encode all components jointly and decode; ``M`` tensors ``(batch, D_k)``."""
        xs = self.check_data(xs)
        return self.decode(self.guide.reconstruction_latent(xs, use_mean), sample_likelihood)

    @torch.no_grad()
    def condition(self, observed: Mapping[int, torch.Tensor], num_samples: int = 1,
                  use_mean: bool = True, sample_likelihood: bool = False) -> list[torch.Tensor]:
        """Conditional generation from any subset of components, without retraining.

        The guide decides how the observed components give the latents
        (``guide.conditional_latent``): the GMRF encodes each observed component with its own
        encoder and conditions the prior in closed form; the shared-latent baselines draw ``z``
        from their subset posterior.

        Args:
            observed: ``{component index: data (batch, D_k)}``.
            num_samples: draws per observed tuple.

        Returns:
            ``M`` tensors ``(num_samples, batch, D_k)``; observed components hold the given data.
        """
        if not isinstance(observed, Mapping) or not observed:
            raise ValueError("observed must be a non-empty dict {component index: data}")
        comps = check_component_indices(observed.keys(), self.num_components, "observed component")
        observed = {int(k): v for k, v in observed.items()}
        data = self.check_data([observed[k] for k in comps], "observed", comps)
        if len(comps) == self.num_components:
            raise ValueError("every component is observed; use reconstruct() instead")
        z = self.guide.conditional_latent(self.prior(), data, comps, num_samples, use_mean)
        rest = [k for k in range(self.num_components) if k not in comps]
        params = self.decoder(self._decoder_input(z)[..., rest, :], rest)
        out = []
        for k in range(self.num_components):
            if k in comps:
                out.append(data[comps.index(k)].expand(num_samples, *data[comps.index(k)].shape))
            else:
                p, lik = params[rest.index(k)], self.likelihoods[k]
                out.append(lik(p).sample() if sample_likelihood else lik.mean(p))
        return out
