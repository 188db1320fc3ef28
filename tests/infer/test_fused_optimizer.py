"""FusedClippedAdam (one fused Adam step over all parameters, the trainer's default) computes
Pyro's per-parameter ClippedAdam update: the same parameters after training steps (to float64
rounding in float64; the float32 tolerance below is measured, not assumed), with parameters
that get their first gradient late, appear during training, or miss a gradient; it resumes
exactly, and it resumes checkpoints written with Pyro's optimiser."""

import math

import pyro
import pytest
import torch
from pyro.infer import SVI

from pyro_mcvae import TrainConfig, fit
from pyro_mcvae.infer import load_checkpoint, save_checkpoint, seed_everything
from pyro_mcvae.infer.optim import STATE_FORMAT, FusedClippedAdam, svi_step
from pyro_mcvae.models import build_model

# 12 steps at lr 1e-2 move a coordinate by up to 0.12; fused and per-parameter float32 runs were
# measured 1e-7 to 4e-6 apart (the fused kernel's rounding, amplified through the networks), while
# a misplaced eps, a rate decayed after the step instead of before, or a missing clamp moves them
# 1e-4 or more apart. Float64 runs agree to 3e-16.
FLOAT32_ATOL = 2e-5
SETTINGS = {"plain": {}, "prior_lr": {"prior_lr": 3e-2, "lr_final": 1e-4, "beta": "linear:4", "clip_norm": 0.5}}


def _train(name, optimizer, dtype, settings, data):
    seed_everything(1)
    model = build_model(name, [4, 4, 4]).to(dtype)
    fit(model, data.to(dtype), TrainConfig(epochs=2, batch_size=16, lr=1e-2, optimizer=optimizer, **settings),
        progress=False)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("settings", list(SETTINGS))
@pytest.mark.parametrize("name", ["gmrf", "mmvaeplus"])
def test_fused_training_equals_pyro_clipped_adam(name, settings):
    torch.manual_seed(0)
    data = torch.randn(96, 3, 4, dtype=torch.float64)
    start = _train_start(name)
    for dtype, atol in ((torch.float64, 1e-12), (torch.float32, FLOAT32_ATOL)):
        pyro_params = _train(name, "pyro", dtype, SETTINGS[settings], data)
        fused_params = _train(name, "fused", dtype, SETTINGS[settings], data)
        moved = max((pyro_params[k] - start[k].to(dtype)).abs().max().item() for k in pyro_params)
        assert moved > 0.02  # the runs went somewhere: the comparison is not of two initial states
        for k, v in pyro_params.items():
            torch.testing.assert_close(fused_params[k], v, rtol=0, atol=atol, msg=f"{name} {dtype} {k}")


def _train_start(name):
    seed_everything(1)
    return {k: v.detach().clone() for k, v in build_model(name, [4, 4, 4]).state_dict().items()}


class _Direct:
    """An objective whose loss is the program's return value (the gradients are set by hand)."""

    def loss_and_grads(self, model, guide, *args):
        loss = model(*args)
        loss.backward()
        return loss.item()

    def loss(self, model, guide, *args):
        return model(*args).item()


def _program(nets, grads, step, dtype):
    """Registers the module "prior" (its own rate), the module "net", a bare parameter "late" that
    gets no gradient before step 2 and none at step 4, and a bare parameter "new" created at
    step 3; the loss is linear in the parameters, so their gradients are ``grads[step]``."""
    prior, net = pyro.module("prior", nets[0]), pyro.module("net", nets[1])
    late = pyro.param("late", torch.ones(3, dtype=dtype))
    terms = [(p * grads[step][f"{mod}.{n}"]).sum() for mod, m in (("prior", prior), ("net", net))
             for n, p in m.named_parameters()]
    if step >= 2 and step != 4:
        terms.append((late * grads[step]["late"]).sum())
    if step >= 3:
        terms.append((pyro.param("new", torch.zeros(2, dtype=dtype)) * grads[step]["new"]).sum())
    return sum(terms)


def _run_optimiser(fused: bool, dtype, steps=7):
    pyro.clear_param_store()
    torch.manual_seed(3)
    nets = [torch.nn.Linear(3, 2).to(dtype), torch.nn.Linear(2, 4).to(dtype)]
    shapes = {f"{m}.{n}": p.shape for m, net in zip(("prior", "net"), nets) for n, p in net.named_parameters()}
    shapes |= {"late": (3,), "new": (2,)}
    # Magnitudes from 1e-7 (where eps's placement matters) to 1e2 (clamped at 1).
    grads = [{k: torch.randn(s, dtype=dtype) * 10 ** torch.empty(s, dtype=dtype).uniform_(-7, 2)
              for k, s in shapes.items()} for _ in range(steps)]
    args = {"lr": 1e-2, "clip_norm": 1.0, "lrd": 0.9}
    rates = {"prior": 0.05}
    if fused:
        optim = FusedClippedAdam(rate=lambda module, param: rates.get(module, args["lr"]), **args)
        step = lambda t: svi_step(lambda: _program(nets, grads, t, dtype), lambda: None, _Direct(), optim)
    else:
        optim = pyro.optim.ClippedAdam(lambda module, param: {**args, "lr": rates.get(module, args["lr"])})
        svi = SVI(lambda t: _program(nets, grads, t, dtype), lambda t: None, optim, loss=_Direct().loss,
                  loss_and_grads=_Direct().loss_and_grads)
        step = svi.step
    for t in range(steps):
        step(t)
    return {k: v.detach().clone() for k, v in pyro.get_param_store().items()}, optim


@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-14), (torch.float32, 1e-7)])
def test_optimiser_equals_pyro_with_late_missing_and_new_parameters(dtype, atol):
    expected, _ = _run_optimiser(False, dtype)
    got, optim = _run_optimiser(True, dtype)
    assert set(got) == set(expected) and {"late", "new"} <= set(got)
    for k, v in expected.items():
        torch.testing.assert_close(got[k], v, rtol=0, atol=atol, msg=k)
    # Per-parameter rates and step counts: the prior's own rate; "late" first stepped at step 2
    # (5 updates, one of them with a zero gradient), "new" created at step 3 (4 updates).
    rates = optim.learning_rates()
    assert rates["prior$$$weight"] == pytest.approx(0.05 * 0.9**7) and rates["net$$$weight"] == pytest.approx(1e-2 * 0.9**7)
    assert rates["new"] == pytest.approx(1e-2 * 0.9**4)
    counts = {k: s["count"] for k, s in optim.get_state()["params"].items()}
    assert counts["late"] == 5 and counts["new"] == 4 and counts["net$$$bias"] == 7


def _model():
    seed_everything(1)
    return build_model("gmrf", [4, 4, 4])


def test_interrupted_fused_run_resumes_bit_for_bit(tmp_path):
    from pyro_mcvae.infer import StepBudget

    torch.manual_seed(0)
    data = torch.randn(96, 3, 4)
    config = TrainConfig(epochs=3, batch_size=16, lr=1e-2, prior_lr=3e-2, lr_final=1e-3, beta="linear:5")
    straight = _model()
    fit(straight, data, config, progress=False)
    first = _model()
    fit(first, data, config, out_dir=tmp_path, progress=False, callbacks=[StepBudget(7, progress=False)])
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["loop"]["step"] == 7 and ckpt["optimizer"]["format"] == STATE_FORMAT
    resumed = build_model("gmrf", [4, 4, 4])  # other initial weights: all must come from the checkpoint
    fit(resumed, data, config, out_dir=tmp_path, progress=False)
    for k, v in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k


def test_a_checkpoint_of_pyro_s_optimiser_resumes_with_the_fused_one(tmp_path):
    """A checkpoint written before the fused optimiser (Pyro's per-parameter state, no
    ``optimizer`` setting recorded) resumes: moments, step counts and decayed rates carry over,
    and the run ends where an uninterrupted run with Pyro's optimiser ends, to float32 rounding."""
    from pyro_mcvae.infer import StepBudget

    torch.manual_seed(0)
    data = torch.randn(96, 3, 4)
    settings = dict(epochs=2, batch_size=16, lr=1e-2, prior_lr=3e-2, lr_final=1e-3)
    straight = _model()
    fit(straight, data, TrainConfig(optimizer="pyro", **settings), progress=False)
    fit(_model(), data, TrainConfig(optimizer="pyro", **settings), out_dir=tmp_path, progress=False,
        callbacks=[StepBudget(5, progress=False)])
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert "format" not in ckpt["optimizer"]  # Pyro's layout: {parameter name: torch state_dict}
    del ckpt["config"]["optimizer"]  # as written before the setting existed
    save_checkpoint(ckpt, tmp_path / "checkpoint.pt")
    resumed = build_model("gmrf", [4, 4, 4])
    fit(resumed, data, TrainConfig(**settings), out_dir=tmp_path, progress=False)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["optimizer"]["format"] == STATE_FORMAT
    for k, v in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=FLOAT32_ATOL, msg=k)


def test_resuming_a_fused_run_with_pyro_s_optimiser_is_refused(tmp_path):
    torch.manual_seed(0)
    data = torch.randn(32, 3, 4)
    fit(_model(), data, TrainConfig(epochs=1, batch_size=16), out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="optimizer: 'fused' in the checkpoint, 'pyro' here"):
        fit(_model(), data, TrainConfig(epochs=2, batch_size=16, optimizer="pyro"), out_dir=tmp_path, progress=False)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="optimizer must be one of"):
        TrainConfig(optimizer="sgd")
    with pytest.raises(ValueError, match="implementation"):
        FusedClippedAdam(implementation="loop")
    bad = FusedClippedAdam()
    with pytest.raises(ValueError, match="neither FusedClippedAdam's nor"):
        bad.set_state({"w": {"state": {}}})
    assert math.isinf(FusedClippedAdam(clip_norm=None).clip_norm)
