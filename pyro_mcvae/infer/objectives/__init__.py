"""Training objectives, each a :class:`pyro.infer.ELBO`, with ``beta`` and strata handled in one
place (:mod:`.base`).

- :class:`TraceELBO`, :class:`MeanFieldELBO`: Pyro's ELBOs (Monte Carlo or analytic KL);
- :class:`ImportanceWeightedELBO`: the IWAE bound, with the DReG gradient on request;
- :class:`SubsetELBO`: MVAE's sum over subsets of components, around any of the above.

A method's default objective is named in its registry entry (:mod:`pyro_mcvae.models.registry`);
:func:`objective_for` builds a model's objective (its default, or the one named, with the
method's additions), :func:`make_objective` one by name.
"""

from .base import MAX_PLATE_NESTING, LatentScale, MultimodalObjective, StratifiedGuide, check_beta
from .elbo import MeanFieldELBO, TraceELBO
from .iwae import ImportanceWeightedELBO, MixtureScoredSite, detach_distribution, scored_entries
from .subsets import SubsetELBO, SubsetTrained

__all__ = [
    "OBJECTIVES",
    "MAX_PLATE_NESTING",
    "ImportanceWeightedELBO",
    "LatentScale",
    "MeanFieldELBO",
    "MixtureScoredSite",
    "MultimodalObjective",
    "StratifiedGuide",
    "SubsetELBO",
    "SubsetTrained",
    "TraceELBO",
    "check_beta",
    "detach_distribution",
    "make_objective",
    "objective_for",
    "scored_entries",
]

OBJECTIVES = ("trace", "meanfield", "iwae", "dreg")


def make_objective(kind: str, num_particles: int = 1):
    """The objective called ``kind``: ``"trace"`` (Monte Carlo KL), ``"meanfield"`` (analytic KL
    where known), ``"iwae"`` (importance-weighted bound with ``num_particles`` samples) or
    ``"dreg"`` (the same bound with the DReG gradient)."""
    if kind not in OBJECTIVES:
        raise ValueError(f"elbo must be one of {OBJECTIVES}, got {kind!r}")
    if kind in ("iwae", "dreg"):
        return ImportanceWeightedELBO(num_particles, dreg=kind == "dreg")
    return (TraceELBO if kind == "trace" else MeanFieldELBO)(num_particles)


def objective_for(model, kind: str | None = None, num_particles: int = 1):
    """The training objective of ``model``: ``kind`` (``None``: the model's ``default_objective``,
    else ``"meanfield"``) with ``num_particles`` particles or importance samples, summed over the
    model's subset terms when it declares them (:class:`SubsetTrained`: MVAE, and the GMRF with
    ``subset_posteriors > 0`` or ``subset_singles``)."""
    objective = make_objective(kind or getattr(model, "default_objective", "meanfield"), num_particles)
    if isinstance(model, SubsetTrained):
        terms = model.subset_terms()
        if terms is not None:
            objective = SubsetELBO(objective, *terms, score=model.subset_scoring,
                                   per_example=model.subset_per_example())
    return objective
