"""Helpers shared by the test modules (``from helpers import ...``; pytest puts ``tests/`` on
``sys.path`` because the folder is not a package)."""

import io
import os
import random
import runpy
import subprocess
import sys
import warnings
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass

import numpy as np
import pyro.distributions as dist
import torch
from hypothesis import strategies as st
from torch import nn

from pyro_mcvae.distributions import GMRF
from pyro_mcvae.models import BlockLatentVAE, CommonConfig, register
from pyro_mcvae.models.layouts import BlockGuide
from pyro_mcvae.nets import VectorDecoder

SEEDS = st.integers(0, 2**32 - 1)  # seeds of numpy Generators drawn by hypothesis


def numpy_kl(mu0, s0, mu1, s1):
    """KL(N(mu0, s0) || N(mu1, s1)) in dense NumPy, written out independently of the library."""
    k = len(mu0)
    s1_inv = np.linalg.inv(s1)
    diff = mu1 - mu0
    return 0.5 * (np.trace(s1_inv @ s0) + diff @ s1_inv @ diff - k
                  + np.linalg.slogdet(s1)[1] - np.linalg.slogdet(s0)[1])


def random_spd(rng, n, batch=(), ridge=0.3, log10_scale=1.0):
    """Well-conditioned random SPD matrices ``(*batch, n, n)`` (numpy float64) with some strong
    correlations: ``A A^T / n + ridge I``, its rows and columns scaled by ``10**u`` with ``u``
    uniform in ``[-log10_scale, log10_scale]``, symmetrised exactly."""
    a = rng.standard_normal((*batch, n, n))
    s = a @ np.swapaxes(a, -1, -2) / n + ridge * np.eye(n)
    scale = 10.0 ** rng.uniform(-log10_scale, log10_scale, size=(*batch, n))
    s = scale[..., :, None] * s * scale[..., None, :]
    return 0.5 * (s + np.swapaxes(s, -1, -2))


def make_gmrf(route, loc, matrix, m, d):
    """GMRF whose law has mean ``loc`` and covariance ``matrix`` (numpy), built by ``route``:
    ``"covariance"``, ``"precision"`` (the inverse is passed) or ``"scale_tril"``."""
    loc_t = torch.as_tensor(loc)
    if route == "covariance":
        return GMRF(loc_t, covariance_matrix=torch.as_tensor(matrix), num_components=m, component_dim=d)
    if route == "precision":
        return GMRF(
            loc_t, precision_matrix=torch.as_tensor(np.linalg.inv(matrix)), num_components=m, component_dim=d
        )
    return GMRF(
        loc_t, scale_tril=torch.as_tensor(np.linalg.cholesky(matrix)), num_components=m, component_dim=d
    )


def random_gmrf(rng, route, m, d, batch=(), loc_scale=1.0):
    """A random GMRF law: mean ``(*batch, M*d)`` standard normal times ``loc_scale``, covariance
    from :func:`random_spd` (drawn in that order); returns ``(mu, cov, gmrf)``."""
    n = m * d
    mu = rng.standard_normal((*batch, n)) * loc_scale
    cov = random_spd(rng, n, batch)
    return mu, cov, make_gmrf(route, mu, cov, m, d)


def private(guide: str) -> dict:
    """MMVAE+'s private latent size for the tests that build every method alike (the other
    methods have no such setting, and the registry refuses settings a method does not have)."""
    return {"private_dim": 1} if guide == "mmvaeplus" else {}


class NaNAfter(torch.nn.Module):
    """Wraps a model; from a given step on, a decoder weight is NaN (a diverged run)."""

    def __init__(self, inner, step):
        super().__init__()
        self.inner, self.step, self.calls = inner, step, 0
        self.component_dims = inner.component_dims
        self.guide = inner.guide

    def model(self, xs, **kwargs):
        self.calls += 1
        if self.calls > self.step:
            with torch.no_grad():
                next(self.inner.decoder.parameters()).fill_(float("nan"))
        self.inner.model(xs, **kwargs)


def affine_decoder(model, latent_size: int):
    """``(c, A)`` (float64) with ``decode(z) = c + A z`` for a model whose decoders are affine
    (``hidden=()``), all components stacked, read off by decoding ``0`` and the unit vectors;
    checked on random latents."""
    z = torch.cat([torch.zeros(1, latent_size), torch.eye(latent_size)]).to(torch.float64)
    out = torch.cat(model.decode(z), -1)
    c, a = out[0], (out[1:] - out[0]).T
    probe = torch.randn(3, latent_size, dtype=torch.float64)
    torch.testing.assert_close(torch.cat(model.decode(probe), -1), probe @ a.T + c, atol=1e-10, rtol=1e-7)
    return c, a



# -- the new method of docs/architecture.md ("add a model in 50 lines"), as written there --------
# (module-level classes: a checkpoint pickles the config, so its class must be importable)
class UnitPrior(nn.Module):
    def __init__(self, size):
        super().__init__()
        self.register_buffer("zero", torch.zeros(size))

    def forward(self):
        return dist.Normal(self.zero, 1.0).to_event(1)


class IndependentGuide(BlockGuide):
    def _posterior(self, xs, mask=None):
        loc, var = self.encoder(xs)
        return dist.Normal(loc.flatten(-2), var.sqrt().flatten(-2)).to_event(1)


@dataclass
class ToyConfig(CommonConfig):
    block_dim: int = 2


def build_toy(component_dims, config):
    dims, d = list(component_dims), config.block_dim
    prior = UnitPrior(len(dims) * d)
    guide = IndependentGuide(dims, d, config.hidden, prior=prior)
    return BlockLatentVAE(dims, d, prior, guide, VectorDecoder(dims, d, config.hidden),
                          config.likelihoods(dims), config)


@contextmanager
def toy_registered(name: str = "toy"):
    """The toy method registered under ``name`` for the duration (after every module is
    imported: what a user's own method is), then removed."""
    from pyro_mcvae.models.registry import _METHODS

    register(name, ToyConfig, build_toy, objective="meanfield")
    try:
        yield name
    finally:
        _METHODS.pop(name, None)


@contextmanager
def process_state():
    """Restore afterwards what a script, or an experiment run in this process, may set for the
    whole process, so that the tests after it see what a subprocess would have left them:
    ``sys.argv``, ``sys.path``, the warning filters, the random states of ``random``, NumPy and
    torch (the runner seeds them), and torch's thread count, gradient mode (a benchmark turns
    gradients off) and default dtype."""
    argv, path, rng = sys.argv, list(sys.path), (random.getstate(), np.random.get_state(), torch.get_rng_state())
    threads, grad, dtype = torch.get_num_threads(), torch.is_grad_enabled(), torch.get_default_dtype()
    try:
        with warnings.catch_warnings():
            yield
    finally:
        sys.argv, sys.path[:] = argv, path
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        torch.set_rng_state(rng[2])
        torch.set_num_threads(threads)
        torch.set_grad_enabled(grad)
        torch.set_default_dtype(dtype)


def run_example(script, args) -> subprocess.CompletedProcess:
    """Run ``python <script> <args>`` in this process (``runpy``, as ``__main__``, the script's
    folder first on ``sys.path``), as a :class:`subprocess.CompletedProcess` with the exit status
    and the text written to ``sys.stdout`` and ``sys.stderr``: the same script and command line
    as a subprocess, without a second interpreter's start-up (importing torch, Pyro and the
    experiments: 4-15 s on 2 busy cores). An uncaught exception propagates (the test fails with
    its traceback); :func:`process_state` restores the process's settings afterwards."""
    out, err, code = io.StringIO(), io.StringIO(), 0
    with process_state():
        sys.argv = [str(script), *map(str, args)]
        sys.path.insert(0, os.path.dirname(os.path.abspath(script)))  # as ``python script`` does (benchmarks' _common)
        try:
            with redirect_stdout(out), redirect_stderr(err):
                runpy.run_path(str(script), run_name="__main__")
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    return subprocess.CompletedProcess([str(script), *args], code, out.getvalue(), err.getvalue())
