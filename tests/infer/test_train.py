"""The SVI loop: it learns, logs, checkpoints, resumes exactly, and stops cleanly on NaN."""

import csv

import pytest
import torch

from helpers import NaNAfter
from pyro_mcvae import MCVAE, TrainConfig, fit
from pyro_mcvae.infer import TrainingDivergedError, load_checkpoint, seed_everything


def build(seed=0, **kw):
    seed_everything(seed)
    return MCVAE.build([2, 2, 2, 2], latent_dim=2, hidden=(16, 16), **kw)


def params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("elbo", ["trace", "meanfield"])
def test_training_lowers_the_loss(copula_tensor, elbo):
    model = build()
    result = fit(model, copula_tensor, TrainConfig(epochs=8, batch_size=128, lr=3e-3, elbo=elbo),
                 progress=False)
    losses = result.losses
    assert len(losses) == 8 and result.steps == 8 * 4
    assert losses[-1] < losses[0] - 1.0, losses


def test_same_seed_same_numbers(copula_tensor):
    a, b = build(), build()
    cfg = TrainConfig(epochs=2, batch_size=128, seed=3)
    ra = fit(a, copula_tensor, cfg, progress=False)
    rb = fit(b, copula_tensor, cfg, progress=False)
    assert ra.losses == rb.losses
    for k, v in params(a).items():
        assert torch.equal(v, params(b)[k]), k


def test_log_and_checkpoint_written(copula_tensor, tmp_path):
    model = build()
    fit(model, copula_tensor, TrainConfig(epochs=3, batch_size=128), out_dir=tmp_path, progress=False)
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert {"epoch", "step", "loss", "beta", "seconds"} <= set(rows[0])
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert {"model", "param_store", "optimizer", "rng", "shuffle_rng", "loop", "history"} <= set(ckpt)
    assert ckpt["loop"]["epoch"] == 3
    assert set(ckpt["param_store"]["params"]) and all("$$$" in k for k in ckpt["param_store"]["params"])
    assert not list(tmp_path.glob("*.tmp")), "atomic write left a temporary file"


def test_resume_after_epochs_equals_uninterrupted(copula_tensor, tmp_path):
    cfg = dict(batch_size=128, beta="linear:10", seed=1)
    full = build()
    ref = fit(full, copula_tensor, TrainConfig(epochs=4, **cfg), progress=False)

    fit(build(), copula_tensor, TrainConfig(epochs=2, **cfg), out_dir=tmp_path, progress=False)
    resumed = build(seed=99)  # different initial weights: everything must come from the checkpoint
    res = fit(resumed, copula_tensor, TrainConfig(epochs=4, **cfg), out_dir=tmp_path, progress=False)
    assert res.losses == pytest.approx(ref.losses, rel=1e-6, abs=1e-6)
    for k, v in params(full).items():
        torch.testing.assert_close(params(resumed)[k], v, rtol=1e-6, atol=1e-7)
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]


class InterruptAt:
    """A beta schedule that raises KeyboardInterrupt once, at a given step (a user's Ctrl-C)."""

    def __init__(self, step):
        self.step, self.fired = step, False

    def __call__(self, step):
        if step == self.step and not self.fired:
            self.fired = True
            raise KeyboardInterrupt
        return 1.0


def test_interrupt_mid_epoch_then_resume_equals_uninterrupted(copula_tensor, tmp_path):
    cfg = dict(batch_size=128, seed=2)
    full = build()
    ref = fit(full, copula_tensor, TrainConfig(epochs=3, **cfg), progress=False)

    with pytest.raises(KeyboardInterrupt):
        fit(build(), copula_tensor, TrainConfig(epochs=3, beta=InterruptAt(6), **cfg), out_dir=tmp_path,
            progress=False)
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["loop"]["step"] == 6 and ckpt["loop"]["epoch"] == 1 and ckpt["loop"]["batch"] == 2
    resumed = build(seed=7)
    res = fit(resumed, copula_tensor, TrainConfig(epochs=3, **cfg), out_dir=tmp_path, progress=False)
    assert res.losses == pytest.approx(ref.losses, rel=1e-6, abs=1e-6)
    for k, v in params(full).items():
        torch.testing.assert_close(params(resumed)[k], v, rtol=1e-6, atol=1e-7)


@pytest.mark.filterwarnings("ignore:Encountered NaN")  # Pyro's own warning, raised on purpose here
@pytest.mark.parametrize("validation", [True, False])
def test_nan_loss_stops_with_clear_error_and_keeps_last_good_checkpoint(copula_tensor, tmp_path, validation):
    model = NaNAfter(build(), step=9)  # 4 steps per epoch: epochs 1-2 are good
    with pytest.raises(TrainingDivergedError, match="loss became nan.*last good checkpoint"):
        fit(model, copula_tensor, TrainConfig(epochs=5, batch_size=128, validate=validation),
            out_dir=tmp_path, progress=False)
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["loop"]["epoch"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_bad_training_input(copula_tensor, tmp_path):
    model = build()
    bad = copula_tensor.clone()
    bad[3, 1, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        fit(model, bad, TrainConfig(epochs=1), progress=False)
    with pytest.raises(ValueError, match="3 components, the model expects 4"):
        fit(model, copula_tensor[:, :3], TrainConfig(epochs=1), progress=False)
    with pytest.raises(ValueError, match=r"shape \(batch, 2\)"):
        fit(model, [c.repeat(1, 2) for c in copula_tensor.unbind(1)], TrainConfig(epochs=1), progress=False)
    with pytest.raises(ValueError, match="floating point"):
        fit(model, copula_tensor.long(), TrainConfig(epochs=1), progress=False)
    with pytest.raises(ValueError, match="elbo"):
        TrainConfig(elbo="nope")
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt"):
        fit(model, copula_tensor, TrainConfig(epochs=1), out_dir=tmp_path, progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)")
def test_training_and_generation_on_cuda(copula_tensor):
    model = build()
    result = fit(model, copula_tensor, TrainConfig(epochs=2, batch_size=128, device="cuda"), progress=False)
    assert result.losses[-1] < result.losses[0]
    assert all(p.is_cuda for p in model.parameters())
    out = model.condition({0: copula_tensor[:8, 0].cuda()}, num_samples=2)
    assert out[1].is_cuda and out[1].shape == (2, 8, 2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_request_without_cuda_is_a_clear_error(copula_tensor):
    with pytest.raises(ValueError, match="cuda"):
        fit(build(), copula_tensor, TrainConfig(epochs=1, device="cuda"), progress=False)


def test_resume_with_a_different_model_is_a_clear_error(copula_tensor, tmp_path):
    fit(build(), copula_tensor, TrainConfig(epochs=1, batch_size=256), out_dir=tmp_path, progress=False)
    seed_everything(0)
    other = MCVAE.build([2, 2, 2, 2], latent_dim=3, hidden=(16, 16))
    with pytest.raises(ValueError, match="different model"):
        fit(other, copula_tensor, TrainConfig(epochs=2, batch_size=256), out_dir=tmp_path, progress=False)


# -- image-sized data: compact data, mixed precision, logging ------------------------------------
def test_uint8_data_with_batch_transform_equals_float_data(copula_tensor):
    lo, hi = copula_tensor.min(), copula_tensor.max()
    scale = (hi - lo) / 255
    compact = ((copula_tensor - lo) / scale).round().to(torch.uint8)  # a quarter of the memory
    transform = lambda xs: [x.float() * scale + lo for x in xs]  # noqa: E731
    cfg = TrainConfig(epochs=2, batch_size=128, seed=4)
    a, b = build(), build()
    ra = fit(a, compact, cfg, progress=False, batch_transform=transform)
    rb = fit(b, compact.float() * scale + lo, cfg, progress=False)
    assert ra.losses == rb.losses
    for k, v in params(a).items():
        assert torch.equal(v, params(b)[k]), k


def test_batch_transform_output_is_checked(copula_tensor):
    compact = copula_tensor.to(torch.uint8)
    with pytest.raises(ValueError, match=r"after batch_transform.*shape \(batch, 2\)"):
        fit(build(), compact, TrainConfig(epochs=1), progress=False,
            batch_transform=lambda xs: [x.float().repeat(1, 2) for x in xs])
    with pytest.raises(ValueError, match="after batch_transform.*floating point"):
        fit(build(), compact, TrainConfig(epochs=1), progress=False, batch_transform=lambda xs: xs)
    with pytest.raises(ValueError, match="3 components"):
        fit(build(), compact[:, :3], TrainConfig(epochs=1), progress=False, batch_transform=lambda xs: xs)
    with pytest.raises(ValueError, match="data_device"):
        TrainConfig(data_device="nowhere")


def test_bf16_autocast_trains_and_matches_float32_at_the_first_step(copula_tensor):
    def first_loss(amp):
        model = build()
        dtypes = []
        model.guide.global_net.net[0].register_forward_hook(lambda mod, inp, out: dtypes.append(out.dtype))
        loss = fit(model, copula_tensor, TrainConfig(epochs=1, batch_size=512, amp=amp), progress=False).losses[0]
        return loss, dtypes[0]

    loss32, dtype32 = first_loss(False)
    loss16, dtype16 = first_loss("bf16")
    assert (dtype32, dtype16) == (torch.float32, torch.bfloat16)  # the networks did run in bf16
    # bf16 keeps 8 significant bits; the measured gap is 4e-5 of the loss.
    assert loss16 == pytest.approx(loss32, rel=1e-3)
    losses = fit(build(), copula_tensor, TrainConfig(epochs=4, batch_size=128, lr=3e-3, amp=True),
                 progress=False).losses
    assert losses[-1] < losses[0] - 1.0, losses


def test_fp16_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="bf16"):
        TrainConfig(amp="fp16")


def test_log_has_step_time_columns(copula_tensor, tmp_path):
    fit(build(), copula_tensor, TrainConfig(epochs=2, batch_size=128), out_dir=tmp_path, progress=False)
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert all(float(r["step_ms"]) > 0 and float(r["samples_per_s"]) > 0 for r in rows)
    # 4 steps of 128 samples per epoch
    assert float(rows[0]["samples_per_s"]) == pytest.approx(512 / (4 * float(rows[0]["step_ms"]) / 1e3), rel=1e-6)


def test_tensorboard_missing_is_a_clear_error(copula_tensor, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    with pytest.raises(ImportError, match="pip install tensorboard"):
        fit(build(), copula_tensor, TrainConfig(epochs=1, tensorboard=True), out_dir=tmp_path, progress=False)
    assert not (tmp_path / "log.csv").exists()  # refused before training


def test_tensorboard_scalars_are_written(copula_tensor, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = dict(batch_size=128, tensorboard=True)
    fit(build(), copula_tensor, TrainConfig(epochs=2, **cfg), out_dir=tmp_path, progress=False)
    after_two = (tmp_path / "checkpoint.pt").read_bytes()
    fit(build(), copula_tensor, TrainConfig(epochs=3, **cfg), out_dir=tmp_path, progress=False)  # resumed
    # As if the run had crashed after logging epoch 3 but before its checkpoint: epoch 3 runs again
    # and its first record is purged, not shown twice.
    (tmp_path / "checkpoint.pt").write_bytes(after_two)
    fit(build(), copula_tensor, TrainConfig(epochs=3, **cfg), out_dir=tmp_path, progress=False)
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [4, 8, 12]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)")
def test_cpu_data_staged_through_pinned_memory_on_cuda(copula_tensor):
    compact = copula_tensor.to(torch.float16)
    transform = lambda xs: [x.float() for x in xs]  # noqa: E731
    results = []
    for data_device in ("cuda", "cpu"):
        model = build()
        cfg = TrainConfig(epochs=2, batch_size=128, device="cuda", data_device=data_device)
        results.append((fit(model, compact, cfg, progress=False, batch_transform=transform).losses, params(model)))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)")
def test_bf16_on_cuda_with_the_diagonal_model(copula_tensor):
    def run(amp):
        return fit(build(guide="diagonal"), copula_tensor,
                   TrainConfig(epochs=1, batch_size=512, device="cuda", amp=amp), progress=False).losses[0]

    assert run("bf16") == pytest.approx(run(False), rel=1e-2)
