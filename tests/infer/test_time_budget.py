"""TimeBudget stops a run by wall time, carries the time spent through checkpoints, and a run
resumed after its budget stops at once."""

import pytest
import torch

from pyro_mcvae.infer import TimeBudget, TrainConfig, fit
from pyro_mcvae.infer.callbacks import Callback
from pyro_mcvae.models import build_model


class FakeClock(Callback):
    """Advances TimeBudget's notion of time by ``tick`` seconds per step (deterministic)."""

    order = -50

    def __init__(self, budget: TimeBudget, tick: float):
        self.budget, self.tick = budget, tick

    def on_step_end(self, trainer, step) -> None:
        self.budget.clock.started -= self.tick  # as if each step had taken ``tick`` seconds more


def _data():
    torch.manual_seed(0)
    return torch.randn(64, 2, 3)


def test_time_budget_stops_and_resumes(tmp_path):
    config = TrainConfig(epochs=100, batch_size=16, seed=0)  # 4 steps per epoch, 400 in all
    budget = TimeBudget(1000.0, progress=False)
    result = fit(build_model("gmrf", [3, 3], block_dim=2), _data(), config, out_dir=tmp_path, progress=False,
                 callbacks=[budget, FakeClock(budget, 100.0)])
    # 100 s per step (and the real, small time): the budget is spent at the 10th step.
    assert result.steps == 10
    assert "time budget" in result.stop_reason
    # Resumed with a budget already spent: no further step.
    again = TimeBudget(1000.0, progress=False)
    result2 = fit(build_model("gmrf", [3, 3], block_dim=2), _data(), config, out_dir=tmp_path, progress=False,
                  callbacks=[again])
    assert result2.steps == result.steps
    assert again.spent() >= 1000.0
    # A larger budget on resume continues where the run stopped: 5 more steps of 100 s.
    more = TimeBudget(1500.0, progress=False)
    result3 = fit(build_model("gmrf", [3, 3], block_dim=2), _data(), config, out_dir=tmp_path, progress=False,
                  callbacks=[more, FakeClock(more, 100.0)])
    assert result3.steps == 15


@pytest.mark.parametrize("bad", [0, -1.0, True, "10"])
def test_time_budget_rejects_bad_seconds(bad):
    with pytest.raises(ValueError, match="seconds"):
        TimeBudget(bad)


def test_prior_learning_rate_applies_to_the_prior_only():
    from pyro_mcvae.infer.train import default_callbacks
    from pyro_mcvae.infer.trainer import Trainer

    model = build_model("gmrf", [3, 3], block_dim=2)
    config = TrainConfig(epochs=1, batch_size=16, prior_lr=0.05)
    trainer = Trainer(model, _data(), config, default_callbacks(config, None, progress=False))
    trainer.fit()
    prior_names = {f"prior$$${name}" for name, _ in model.prior.named_parameters()}
    rates = {(name in prior_names, lr) for name, lr in trainer.optim.learning_rates().items()}
    assert rates == {(True, 0.05), (False, config.lr)}
    with pytest.raises(ValueError, match="prior_lr"):
        TrainConfig(prior_lr=0.0)


def test_step_budget_stops_inside_an_epoch_and_resumes_to_the_same_parameters(tmp_path):
    from pyro_mcvae.infer import StepBudget

    def model():  # the same initial weights each time
        torch.manual_seed(1)
        return build_model("gmrf", [3, 3], block_dim=2)

    config = TrainConfig(epochs=100, batch_size=16, seed=0)  # 4 steps per epoch
    first = fit(model(), _data(), config, out_dir=tmp_path / "split",
                progress=False, callbacks=[StepBudget(10, progress=False)])
    assert first.steps == 10 and "step budget" in first.stop_reason
    resumed_model = model()
    resumed = fit(resumed_model, _data(), config, out_dir=tmp_path / "split", progress=False,
                  callbacks=[StepBudget(15, progress=False)])
    straight_model = model()
    straight = fit(straight_model, _data(), config, out_dir=tmp_path / "straight", progress=False,
                   callbacks=[StepBudget(15, progress=False)])
    assert resumed.steps == straight.steps == 15
    for (name, a), (_, b) in zip(resumed_model.state_dict().items(), straight_model.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_step_budget_rejects_bad_steps(bad):
    from pyro_mcvae.infer import StepBudget

    with pytest.raises(ValueError, match="steps"):
        StepBudget(bad)
