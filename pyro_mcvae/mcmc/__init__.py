"""MCMC for energy-based (MRF) priors: persistent HMC chains and the log-partition gradient.

For a prior ``p(z) = exp(-E_theta(z)) / Z(theta)`` the partition function is intractable, but
its gradient is an expectation under the prior:

    grad_theta log Z = -E_p[grad_theta E_theta(z)],

estimated from samples of ``p``. :class:`PersistentHMC` keeps ``C`` HMC chains alive across
training steps (a few transitions per step instead of a fresh warm-up), and
:func:`log_partition_surrogate` turns their states into a term whose gradient is the estimate.

The sampler is split the way Pyro's and NumPyro's are, each piece small and tested alone
(``tests/mcmc/``):

* :mod:`~pyro_mcvae.mcmc.integrator`: the metric (mass matrix) and the leapfrog integrator;
* :mod:`~pyro_mcvae.mcmc.adaptation`: the step size (dual averaging), the mass (moving
  cross-chain moments) and the trajectory length (ChEES) adapters;
* :mod:`~pyro_mcvae.mcmc.schedule`: the warm-up's windows;
* :mod:`~pyro_mcvae.mcmc.kernel`: :class:`PersistentHMC`, which composes them (the mathematics
  of the transition and the warm-up is in its module docstring);
* :mod:`~pyro_mcvae.mcmc.diagnostics`: the recorded draws, ArviZ export and mixing checks;
* :mod:`~pyro_mcvae.mcmc.partition`: :func:`log_partition_surrogate`.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "PersistentHMC": ".kernel", "log_partition_surrogate": ".partition",
    "EuclideanMetric": ".integrator", "leapfrog": ".integrator",
    "DualAveraging": ".adaptation", "CrossChainMoments": ".adaptation",
    "regularised_inverse_mass": ".adaptation", "chees_gradient": ".adaptation",
    "TrajectoryAdapter": ".adaptation",
    "WarmupSchedule": ".schedule",
    "RHAT_LIMIT": ".diagnostics", "ESS_PER_1000_LIMIT": ".diagnostics",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
