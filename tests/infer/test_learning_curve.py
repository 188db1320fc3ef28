"""LearningCurve: rows at step 0 and every N steps with the wall time, kept consistent across a
resume, and drawn by learning_curve_figure."""

import csv

import torch

from pyro_mcvae.infer import LearningCurve, TrainConfig, fit
from pyro_mcvae.models import build_model


def _model():
    torch.manual_seed(1)
    return build_model("gmrf", [3, 3], block_dim=2)


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_learning_curve_rows_and_resume(tmp_path):
    torch.manual_seed(0)
    data = torch.randn(64, 2, 3)
    calls = []

    def fn(model, epoch):
        calls.append(epoch)
        return {"loc_norm": float(model.prior().loc.norm())}

    config = TrainConfig(epochs=3, batch_size=16, seed=0, checkpoint_every=4)  # 12 steps
    curve = tmp_path / "curve.csv"
    fit(_model(), data, config, out_dir=tmp_path / "a", progress=False,
        callbacks=[LearningCurve(fn, curve, every_steps=5)])
    rows = _rows(curve)
    assert [int(float(r["step"])) for r in rows] == [0, 5, 10]
    assert all(float(r["seconds"]) >= 0 for r in rows)
    assert float(rows[0]["seconds"]) <= float(rows[-1]["seconds"])
    assert rows[0]["eval_loc_norm"] != rows[-1]["eval_loc_norm"]  # it trained in between

    # Interrupted after 8 steps (epochs=2), then resumed to 12: the same steps and values.
    curve_b = tmp_path / "curve_b.csv"
    two = TrainConfig(epochs=2, batch_size=16, seed=0, checkpoint_every=4)
    fit(_model(), data, two, out_dir=tmp_path / "b", progress=False,
        callbacks=[LearningCurve(fn, curve_b, every_steps=5)])
    fit(_model(), data, config, out_dir=tmp_path / "b", progress=False,
        callbacks=[LearningCurve(fn, curve_b, every_steps=5)])
    rows_b = _rows(curve_b)
    assert [r["step"] for r in rows_b] == [r["step"] for r in rows]
    assert [r["eval_loc_norm"] for r in rows_b] == [r["eval_loc_norm"] for r in rows]


def test_learning_curve_figure(tmp_path):
    from pyro_mcvae.plots import learning_curve_figure, save_figure

    rows = [{"step": 0.0, "seconds": 0.0, "eval_a": 0.1}, {"step": 10.0, "seconds": 60.0, "eval_a": 0.5}]
    path = save_figure(learning_curve_figure(rows, {"eval_a": "a"}, "t", chance=0.1), tmp_path / "c.png")
    assert path.stat().st_size > 1000
    import pytest

    with pytest.raises(ValueError, match="column"):
        learning_curve_figure(rows, {"eval_b": "b"})
