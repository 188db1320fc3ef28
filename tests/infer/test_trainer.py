"""The Trainer's callbacks: event order and counts, periodic evaluation, early stopping, stop
requests with an exact resume, the NaN stop, MCMC chain columns, and the supervised variant.

(The KeyboardInterrupt-then-resume and the log/TensorBoard/DDP checks of ``fit`` are in
test_train.py and test_distributed.py.)"""

import csv
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from helpers import NaNAfter
from pyro_mcvae import MCVAE, TrainConfig, fit
from pyro_mcvae.infer import (Callback, Checkpoint, CSVLogger, EarlyStopping, PeriodicEvaluation, StepInfo,
                              SupervisedTrainer, Trainer, TrainingDivergedError, load_checkpoint, seed_everything)
from pyro_mcvae.infer.callbacks import ChainDiagnostics, chain_columns


def build(seed=0):
    seed_everything(seed)
    return MCVAE.build([2, 2, 2], 2, hidden=(8,))


@pytest.fixture
def data(copula_tensor):
    return copula_tensor[:96, :3]  # batches of 32: 3 steps per epoch


def params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_params(a, b):
    for k, v in a.items():
        assert torch.equal(v, b[k]), k


def read_log(path):
    return list(csv.DictReader(open(path)))


class Recorder(Callback):
    def __init__(self, events, name="rec", order=0):
        self.events, self.name, self.order = events, name, order

    def setup(self, trainer):
        self.events.append((self.name, "setup"))

    def on_train_start(self, trainer):
        self.events.append((self.name, "train_start", trainer.state["step"]))

    def on_epoch_start(self, trainer, epoch):
        self.events.append((self.name, "epoch_start", epoch))

    def on_step_end(self, trainer, step):
        assert trainer.state["step"] == step.step  # the state already counts the step
        self.events.append((self.name, "step", step.step, step.epoch, step.batch, step.size))

    def on_epoch_end(self, trainer, row):
        assert trainer.history[-1] is row
        self.events.append((self.name, "epoch_end", row["epoch"], row["step"], row.get("eval_x")))

    def on_train_end(self, trainer):
        self.events.append((self.name, "train_end", trainer.error))


class StopAt(Callback):
    """A user callback that ends the run after a given step."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, trainer, step):
        if step.step == self.step:
            trainer.request_stop("user stop")


def test_callbacks_fire_in_order_with_step_and_epoch_counts(copula_tensor):
    events = []
    late, early = Recorder(events, "late", order=5), Recorder(events, "early", order=-5)
    evaluation = PeriodicEvaluation(lambda model, epoch: {"x": float(epoch)})
    data = copula_tensor[:100, :3]  # 4 steps per epoch, the last of 4 samples
    result = Trainer(build(), data, TrainConfig(epochs=2, batch_size=32), callbacks=[late, evaluation, early]).fit()
    assert result.steps == 8 and len(result.history) == 2 and result.stop_reason is None
    assert [e[1:] for e in events if e[0] == "early"] == [
        ("setup",), ("train_start", 0),
        ("epoch_start", 1), ("step", 1, 1, 1, 32), ("step", 2, 1, 2, 32), ("step", 3, 1, 3, 32), ("step", 4, 1, 4, 4),
        ("epoch_end", 1, 4, 1.0),  # the evaluation (order -10) ran before it, though listed after "late"
        ("epoch_start", 2), ("step", 5, 2, 1, 32), ("step", 6, 2, 2, 32), ("step", 7, 2, 3, 32), ("step", 8, 2, 4, 4),
        ("epoch_end", 2, 8, 2.0),
        ("train_end", None),
    ]
    # every event reaches "early" (order -5) before "late" (order 5), though listed the other way
    assert [e[0] for e in events] == ["early", "late"] * (len(events) // 2)


def test_periodic_evaluation_writes_its_columns_at_the_right_epochs(data, tmp_path):
    calls = []

    def evaluate(model, epoch):
        calls.append((epoch, model.training, torch.is_grad_enabled()))
        return {"score": 10.0 * epoch, "noise": float(torch.randn(()))}  # draws: must not change training

    model = build()
    fit(model, data, TrainConfig(epochs=5, batch_size=32), out_dir=tmp_path, progress=False,
        callbacks=[PeriodicEvaluation(evaluate, every_epochs=2)])
    assert calls == [(2, False, False), (4, False, False)]  # eval mode, no gradients
    assert model.training
    rows = read_log(tmp_path / "log.csv")
    assert [r["eval_score"] for r in rows] == ["", "20.0", "", "40.0", ""]
    assert list(rows[0])[:7] == ["epoch", "step", "loss", "beta", "seconds", "step_ms", "samples_per_s"]
    plain = build()
    fit(plain, data, TrainConfig(epochs=5, batch_size=32), progress=False)
    assert_same_params(params(model), params(plain))

    # every 4 steps (3 per epoch): at steps 4 and 8, in epochs 2 and 3; each row holds its epoch's
    calls.clear()
    fit(build(), data, TrainConfig(epochs=3, batch_size=32), out_dir=tmp_path / "steps", progress=False,
        callbacks=[PeriodicEvaluation(evaluate, every_epochs=0, every_steps=4)])
    assert [c[0] for c in calls] == [2, 3]
    assert [r["eval_score"] for r in read_log(tmp_path / "steps" / "log.csv")] == ["", "20.0", "30.0"]


def scripted(values, every=1):
    """An evaluation whose metric follows ``values`` (one per evaluated epoch)."""
    return PeriodicEvaluation(lambda model, epoch: {"m": values[epoch // every - 1]}, every_epochs=every)


@pytest.mark.parametrize("values, kwargs, every, stops_after", [
    ([5, 4, 4.5, 4.2, 4.1, 3, 2, 1], dict(patience=3), 1, 5),  # best at epoch 2, then 3 epochs without
    ([1.0, 1.05, 1.2, 1.25, 1.29, 1.3, 2.0], dict(mode="max", min_delta=0.1, patience=2), 1, 5),
    ([3.0, 3.5, 3.2, 1.0, 1.0], dict(patience=2), 2, 6),  # epochs without the metric do not count
    ([3.0, 2.0, 1.0, 0.5, 0.4, 0.3], dict(patience=1), 1, None),  # always improving: all 6 epochs
])
def test_early_stopping_stops_at_the_right_epoch_on_a_scripted_metric(copula_tensor, values, kwargs, every,
                                                                      stops_after):
    stopper = EarlyStopping(monitor="eval_m", **kwargs)
    result = fit(build(), copula_tensor[:64, :3], TrainConfig(epochs=6, batch_size=64), progress=False,
                 callbacks=[stopper, scripted(values, every)])  # the evaluation runs first anyway (order)
    assert len(result.history) == (stops_after or 6)
    assert result.steps == len(result.history)
    if stops_after is None:
        assert result.stop_reason is None
    else:
        assert result.stop_reason.startswith("early stopping: eval_m did not improve")


@pytest.mark.parametrize("losses, stops_after", [([3, 2, 2.5, 2.4, 1], 4), ([3, 2, 1.5, 1.4, 1.3], None)])
def test_early_stopping_monitors_the_training_loss_by_default(losses, stops_after):
    trainer = SimpleNamespace(stop_reason=None)
    trainer.request_stop = lambda reason: setattr(trainer, "stop_reason", reason)
    stopper = EarlyStopping(patience=2, min_delta=0.05)
    for epoch, loss in enumerate(losses, 1):
        stopper.on_epoch_end(trainer, {"epoch": epoch, "loss": loss})
        if trainer.stop_reason:
            break
    assert (epoch if trainer.stop_reason else None) == stops_after


def test_user_callback_stops_mid_epoch_and_the_run_resumes_exactly(data, tmp_path):
    cfg = dict(epochs=3, batch_size=32, seed=1, beta="linear:5")
    full = build()
    ref = fit(full, data, TrainConfig(**cfg), progress=False)

    stopped = fit(build(), data, TrainConfig(**cfg), out_dir=tmp_path, progress=False, callbacks=[StopAt(5)])
    assert stopped.steps == 5 and stopped.stop_reason == "user stop"
    assert len(stopped.history) == 1  # no row for the unfinished epoch
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert (ckpt["loop"]["step"], ckpt["loop"]["epoch"], ckpt["loop"]["batch"]) == (5, 1, 2)  # saved at the stop

    resumed = build(seed=42)  # other initial weights: everything must come from the checkpoint
    res = fit(resumed, data, TrainConfig(**cfg), out_dir=tmp_path, progress=False)
    assert res.steps == 9 and res.losses == ref.losses
    assert_same_params(params(resumed), params(full))
    assert [int(r["epoch"]) for r in read_log(tmp_path / "log.csv")] == [1, 2, 3]


def test_early_stopping_state_survives_a_resume(data, tmp_path):
    values = [5, 4, 4.5, 4.6, 4.7, 4.8, 4.9]  # patience 3: stops after epoch 5
    cfg = TrainConfig(epochs=7, batch_size=32)
    ref = fit(build(), data, cfg, progress=False, callbacks=[EarlyStopping("eval_m", patience=3), scripted(values)])
    assert len(ref.history) == 5
    # Stopped in epoch 4 (at step 10 of 3 per epoch), then resumed with fresh callbacks: without the
    # saved best and wait, epoch 4 would become the new best and the run would go on to epoch 7.
    fit(build(), data, cfg, out_dir=tmp_path, progress=False,
        callbacks=[EarlyStopping("eval_m", patience=3), scripted(values), StopAt(10)])
    res = fit(build(), data, cfg, out_dir=tmp_path, progress=False,
              callbacks=[EarlyStopping("eval_m", patience=3), scripted(values)])
    assert len(res.history) == 5 and res.stop_reason == ref.stop_reason
    assert res.losses == ref.losses


@pytest.mark.filterwarnings("ignore:Encountered NaN")  # Pyro's own warning, raised on purpose here
def test_nan_stop_raises_and_keeps_the_last_good_mid_epoch_checkpoint(data, tmp_path):
    # Step 6 (index 5, the end of epoch 2) diverges, where a checkpoint would be due twice over.
    model = NaNAfter(build(), step=5)
    with pytest.raises(TrainingDivergedError, match=r"loss became nan at step 5 \(epoch 2\).*last good checkpoint"):
        fit(model, data, TrainConfig(epochs=3, batch_size=32, checkpoint_every=2), out_dir=tmp_path, progress=False)
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["loop"]["step"] == 4  # written at step 4, not at the diverged step 6
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert len(read_log(tmp_path / "log.csv")) == 1

    # The stop is the callback's doing: without it the diverged last step of the epoch goes into its loss.
    result = Trainer(NaNAfter(build(), step=2), data, TrainConfig(epochs=1, batch_size=32)).fit()
    assert np.isnan(result.losses[0])


def test_chain_diagnostics_columns_take_every_numeric_key():
    class Prior:
        def diagnostics(self):
            return {"max_rhat": 1.01, "min_ess_bulk": 300.0, "divergences": 2, "acceptance_rate": 0.8,
                    "step_size": np.float64(0.1), "mixing_ok": True, "warnings": "R-hat is high", "chains": 64}

        def inference_data(self, transitions=0):  # the rest of the MCMCPrior interface
            raise NotImplementedError

    columns = chain_columns(Prior())
    assert columns == {"chain_max_rhat": 1.01, "chain_min_ess_bulk": 300.0, "chain_divergences": 2,
                       "chain_acceptance": 0.8, "chain_step_size": 0.1, "chain_mixing_ok": 1, "chain_chains": 64}
    assert list(columns)[:4] == ["chain_max_rhat", "chain_min_ess_bulk", "chain_divergences", "chain_acceptance"]
    assert chain_columns(object()) == {}
    row = {"epoch": 1}
    ChainDiagnostics().on_epoch_end(SimpleNamespace(model=SimpleNamespace(prior=Prior())), row)
    assert row["chain_max_rhat"] == 1.01 and "chain_warnings" not in row


def test_supervised_trainer_shares_the_callbacks_and_resumes_exactly(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(80, 3, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1 * torch.randn(80, 1, generator=g)

    def run(out=None, stop=None):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 1))
        callbacks = [] if out is None else [CSVLogger(out / "log.csv"), Checkpoint(out / "checkpoint.pt")]
        trainer = SupervisedTrainer(net, lambda net, b: torch.nn.functional.mse_loss(net(b[0]), b[1]), [x, y],
                                    torch.optim.Adam(net.parameters(), lr=1e-2), epochs=4, batch_size=16, seed=3,
                                    callbacks=callbacks + ([StopAt(stop)] if stop else []))
        return net, trainer.fit()

    net, ref = run()
    assert ref.steps == 20 and ref.losses[-1] < ref.losses[0]
    assert run(tmp_path, stop=7)[1].steps == 7  # dropout draws from the global generator: it is restored too
    resumed, res = run(tmp_path)
    assert res.losses == ref.losses
    assert_same_params(params(resumed), params(net))
    rows = read_log(tmp_path / "log.csv")
    assert list(rows[0]) == ["epoch", "step", "loss", "seconds", "step_ms", "samples_per_s"]
    assert [int(r["step"]) for r in rows] == [5, 10, 15, 20]


def test_callback_arguments_are_checked():
    with pytest.raises(ValueError, match="mode"):
        EarlyStopping(mode="lowest")
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(patience=0)
    with pytest.raises(ValueError, match="every_epochs or every_steps"):
        PeriodicEvaluation(lambda model, epoch: {}, every_epochs=0)
    with pytest.raises(ValueError, match="dict of numbers"):
        PeriodicEvaluation(lambda model, epoch: 1.0).evaluate(torch.nn.Linear(1, 1), 1)
    assert isinstance(StepInfo(1, 1, 1, 0.5, 4).metrics, dict)


def test_autocast_keeps_a_stratified_guide_visible_to_a_static_protocol_check():
    # Python >= 3.12 checks runtime protocols with inspect.getattr_static, which a __getattr__
    # pass-through does not satisfy: the bf16 wrapper of MMVAE+'s guide once hid its strata on a
    # GPU (the objective then saw one stratum where the guide drew five).
    import inspect

    from pyro_mcvae.infer.objectives.base import StratifiedGuide
    from pyro_mcvae.infer.trainer import _autocast

    class Strata:
        def __call__(self, x):
            return (torch.ones(2, 2) @ torch.ones(2, 2)).dtype  # matmul follows autocast

        def stratum_weights(self, mask, batch, device=None, dtype=None):
            return torch.full((3, batch), 1.0 / 3)

    wrapped = _autocast(Strata(), "cpu", torch.bfloat16)
    assert callable(inspect.getattr_static(wrapped, "stratum_weights"))
    assert isinstance(wrapped, StratifiedGuide)
    assert wrapped.stratum_weights(None, 4).shape == (3, 4)
    assert wrapped(None) == torch.bfloat16  # the program runs under autocast
    plain = _autocast(lambda x: x, "cpu", torch.bfloat16)
    with pytest.raises(AttributeError):
        inspect.getattr_static(plain, "stratum_weights")
