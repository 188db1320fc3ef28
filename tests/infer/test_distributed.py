"""Data-parallel ``fit`` (DDP over gloo, on the CPU) against the single-process run.

The runs are real ``torchrun`` launches of this file (its ``__main__`` part is the worker), two
of them for the whole module: one process (the reference) and two processes.

Comparing parameters honestly. Each rank draws its own latent noise, so a two-process run cannot
draw what the single-process run draws. The comparison therefore uses a model without noise: the
guide puts a point mass at the encoder's mean (:class:`PointGuide`), so the objective is a
deterministic function of the parameters and a two-process run must reproduce the one-process run
up to float32 rounding (the batch sum is added up in another order; measured: 6e-8 on the
parameters after 15 steps). The same worker also runs two broken variants -- no gradient
synchronisation (measured 3e-2), and no loss scaling (9e-3) -- to show that the tolerance is far
below the difference a real bug makes (giving rank 1 the wrong rows of the mask: 1e-2). The global
batch (75 of 320 samples) splits unevenly (38 + 37, last batch 10 + 10), so a rank-size-dependent
scaling error would show as well; ``clip_norm`` is set where ClippedAdam clamps some gradient
entries but not others, since Adam alone is blind to a constant factor on the gradient.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_mcvae import MCVAE, TrainConfig, fit
from pyro_mcvae.data import make_copula_splits
from pyro_mcvae.infer import Callback, load_checkpoint, seed_everything
from pyro_mcvae.models import BlockLatentVAE, ComponentLikelihood
from pyro_mcvae.models.gmrf import DiagonalGaussianGuide, GMRFPrior
from pyro_mcvae.nets import VectorDecoder

DIMS = [2, 2, 2, 2]
# 300 times the float32 rounding difference measured between 2 ranks and 1 rank, 450 times below
# the smallest difference a broken variant makes.
TOLERANCE = 2e-5


class PointGuide(DiagonalGaussianGuide):
    """The diagonal guide with its draw replaced by the mean: no noise anywhere in the objective."""

    def _sample_latents(self, xs, mask):
        return pyro.sample("z", dist.Delta(self._posterior(xs, mask).mean, event_dim=1))


def point_model(seed: int = 0) -> MCVAE:
    seed_everything(seed)
    prior = GMRFPrior(len(DIMS), 2)
    guide = PointGuide(DIMS, 2, (16, 16), prior=prior)
    # The point guide does not use the variances the encoder's last layer outputs (its columns
    # d:). With absent components they still enter the completion q(z_A) p(z_B | z_A) and cancel
    # there, so their gradient is zero up to rounding, which Adam's normalisation would turn into
    # steps of about lr, different in every run: their weights are held fixed.
    last = guide.encoder.nets.net.layers[-1]
    keep = torch.tensor([1.0, 1.0, 0.0, 0.0])
    for param in (last.weight, last.bias):
        param.register_hook(lambda grad: grad * keep)
    return BlockLatentVAE(DIMS, 2, prior, guide, VectorDecoder(DIMS, 2, (16, 16)),
                          [ComponentLikelihood("normal", d) for d in DIMS])


def gmrf_model(seed: int = 0) -> MCVAE:
    seed_everything(seed)
    return MCVAE.build(DIMS, latent_dim=2, hidden=(16, 16))


def copula_data(n: int = 320) -> torch.Tensor:
    return torch.as_tensor(make_copula_splits(n_train=n, n_test=16, seed=0).train)


def presence_mask(n: int = 320) -> torch.Tensor:
    mask = torch.ones(n, len(DIMS), dtype=torch.bool)
    mask[::3, 1] = False
    mask[1::4, 3] = False
    return mask


POINT_CONFIG = dict(epochs=3, batch_size=75, lr=3e-3, elbo="trace", beta="linear:5", clip_norm=2.0, seed=0)
# With absent components and beta = 0 the completion of the posterior from the prior passes the
# prior some parameters whose gradient is zero up to rounding (Adam would turn that into steps of
# ~lr that differ with the summation order): beta stays 1 here.
MASKED_CONFIG = dict(POINT_CONFIG, beta=1.0)
RESUME_CONFIG = dict(batch_size=64, seed=1)  # beta 1: DDP without find_unused_parameters


# -- the worker (run by torchrun) ---------------------------------------------------------------
def _params(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _audit_writes(base: str, events: list) -> None:
    """Record every file write, rename, removal and folder creation under ``base``."""
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & write_flags)
        elif event == "os.rename":  # also os.replace
            path, writing = args[1], True
        elif event in ("os.remove", "os.mkdir", "os.rmdir"):
            path, writing = args[0], True
        else:
            return
        if writing and isinstance(path, (str, os.PathLike)) and os.fspath(path).startswith(base):
            events.append([event, os.fspath(path)])

    sys.addaudithook(hook)


def worker(launch: str, results: Path) -> None:
    import torch.distributed as torch_dist

    import pyro_mcvae.infer.distributed as ddp_module

    rank = int(os.environ["RANK"])
    data = copula_data()
    out: dict = {}
    if launch == "one":
        plain = point_model()
        fit(plain, data, TrainConfig(**POINT_CONFIG, distributed="off"), progress=False)
        out["plain"] = _params(plain)
        ddp = point_model()
        fit(ddp, data, TrainConfig(**POINT_CONFIG, distributed="on"), progress=False)
        out["ddp"] = _params(ddp)
        masked = point_model()
        fit(masked, data, TrainConfig(**MASKED_CONFIG), progress=False, mask=presence_mask())
        out["masked"] = _params(masked)
        try:
            fit(gmrf_model(), data, TrainConfig(epochs=1, elbo="dreg", num_particles=2), progress=False)
        except ValueError as err:
            out["dreg_error"] = str(err)
        try:  # beta = 0 at step 0: the prior's parameters get no gradient there
            fit(gmrf_model(), data, TrainConfig(epochs=1, beta="linear:10", find_unused_parameters=False),
                progress=False)
        except RuntimeError as err:
            out["unused_error"] = str(err)
    else:
        ddp = point_model()
        fit(ddp, data, TrainConfig(**POINT_CONFIG), progress=False)  # "auto": WORLD_SIZE=2
        out["ddp"] = _params(ddp)
        masked = point_model()
        fit(masked, data, TrainConfig(**MASKED_CONFIG), progress=False, mask=presence_mask())
        out["masked"] = _params(masked)
        real_wrap, real_scale = ddp_module.wrap_ddp, ddp_module.loss_scale
        ddp_module.wrap_ddp = lambda module, *args, **kwargs: module  # bug: no gradient synchronisation
        broken = point_model()
        fit(broken, data, TrainConfig(**POINT_CONFIG), progress=False)
        out["no_sync"] = _params(broken)
        ddp_module.wrap_ddp = real_wrap
        ddp_module.loss_scale = lambda world_size: 1.0  # bug: each rank's loss not scaled by R
        broken = point_model()
        fit(broken, data, TrainConfig(**POINT_CONFIG), progress=False)
        out["no_scale"] = _params(broken)
        ddp_module.loss_scale = real_scale

        # A stop requested on rank 1 alone ends the run on both ranks at the same step.
        class StopOnRankOne(Callback):
            def on_step_end(self, trainer, step):
                if rank == 1 and step.step == 3:
                    trainer.request_stop("rank 1 stops")

        stopped = fit(gmrf_model(), data, TrainConfig(epochs=2, **RESUME_CONFIG), progress=False,
                      callbacks=[StopOnRankOne()])
        out["stopped"] = (stopped.steps, stopped.stop_reason)

        # Resume: 2 epochs into run_dir, then 4 from its checkpoint, against 4 uninterrupted.
        full = gmrf_model()
        out["full_losses"] = fit(full, data, TrainConfig(epochs=4, **RESUME_CONFIG), progress=False).losses
        out["full"] = _params(full)
        run_dir = results / "run"
        events: list = []
        _audit_writes(str(run_dir), events)
        logs = dict(RESUME_CONFIG, tensorboard=importlib.util.find_spec("tensorboard") is not None)
        fit(gmrf_model(), data, TrainConfig(epochs=2, **logs), out_dir=run_dir, progress=False)
        resumed = gmrf_model(seed=99)  # other initial weights: everything must come from the checkpoint
        out["resumed_losses"] = fit(resumed, data, TrainConfig(epochs=4, **logs), out_dir=run_dir,
                                    progress=False).losses
        out["resumed"] = _params(resumed)
        out["writes"] = events
    torch.save(out, results / f"{launch}_rank{rank}.pt")
    torch_dist.destroy_process_group()


# -- the tests -----------------------------------------------------------------------------------
def _launch(launch: str, nproc: int, results: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           __file__, launch, str(results)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise AssertionError(f"torchrun {launch} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    results = tmp_path_factory.mktemp("ddp")
    _launch("one", 1, results)
    _launch("two", 2, results)
    load = lambda name: torch.load(results / f"{name}.pt", weights_only=False)  # noqa: E731
    return {"one": load("one_rank0"), "two": [load("two_rank0"), load("two_rank1")], "dir": results}


def _max_diff(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a if a[k].is_floating_point())


def test_one_process_ddp_reproduces_the_single_process_path(runs):
    one = runs["one"]
    assert _max_diff(one["ddp"], one["plain"]) <= 1e-6


def test_two_ranks_match_one_rank_on_the_same_global_batch(runs):
    reference = runs["one"]["ddp"]
    rank0, rank1 = runs["two"]
    assert _max_diff(rank0["ddp"], rank1["ddp"]) == 0.0  # DDP keeps the replicas identical
    assert _max_diff(rank0["ddp"], reference) <= TOLERANCE
    assert _max_diff(rank0["masked"], runs["one"]["masked"]) <= TOLERANCE  # each rank its rows of the mask
    # The test can fail: the bugs it guards against move the parameters far beyond the tolerance.
    assert _max_diff(rank0["no_sync"], reference) > 100 * TOLERANCE
    assert _max_diff(rank0["no_sync"], rank1["no_sync"]) > 100 * TOLERANCE  # the replicas drift apart
    assert _max_diff(rank0["no_scale"], reference) > 100 * TOLERANCE


def test_resumed_distributed_run_continues_exactly(runs):
    rank0, rank1 = runs["two"]
    for r in (rank0, rank1):
        assert r["resumed_losses"] == pytest.approx(r["full_losses"], rel=1e-6, abs=1e-6)
        for k, v in r["full"].items():
            torch.testing.assert_close(r["resumed"][k], v, rtol=1e-6, atol=1e-7)
    ckpt = load_checkpoint(runs["dir"] / "run" / "checkpoint.pt")
    assert ckpt["loop"]["epoch"] == 4 and ckpt["world_size"] == 2 and len(ckpt["rng_ranks"]) == 2
    rows = (runs["dir"] / "run" / "log.csv").read_text().splitlines()
    assert len(rows) == 1 + 4


def test_a_stop_requested_on_one_rank_stops_every_rank(runs):
    rank0, rank1 = runs["two"]
    assert rank1["stopped"] == (3, "rank 1 stops")
    assert rank0["stopped"] == (3, "stop requested by another process")


def test_only_rank_zero_writes_files(runs):
    rank0, rank1 = runs["two"]
    assert rank1["writes"] == []
    written = {Path(path).name for _, path in rank0["writes"]}
    assert {"log.csv", "checkpoint.pt.tmp", "checkpoint.pt"} <= written


def test_unsupported_settings_are_clear_errors(runs):
    assert "dreg" in runs["one"]["dreg_error"] and "iwae" in runs["one"]["dreg_error"]
    assert "TrainConfig(find_unused_parameters=True)" in runs["one"]["unused_error"]


def test_distributed_on_without_torchrun_is_a_clear_error(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ValueError, match="torchrun"):
        fit(gmrf_model(), copula_data(64), TrainConfig(epochs=1, distributed="on"), progress=False)


if __name__ == "__main__":
    worker(sys.argv[1], Path(sys.argv[2]))
