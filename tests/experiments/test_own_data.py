"""``pyro-mcvae train --npz / --images``: any registered method on your own components from files,
with a mask, a seeded and recorded split, per-component likelihoods, evaluation and reloading;
every bad input ends with one line and exit status 2."""

import json

import numpy as np
import torch

from pyro_mcvae.cli import main

SMALL = ["--epochs", "2", "--set", "model.hidden=[8]", "--set", "train.batch_size=32", "--device", "cpu"]


def _npz(folder, n=90, seed=0, nan_absent=True):
    """Components of sizes 3, 10, 16 (normal, Bernoulli stored as integers, normal) sharing a
    2-d cause, and a mask with about 30% of the components absent (NaN there)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 2))
    a = z @ rng.normal(size=(2, 3)) + 0.1 * rng.normal(size=(n, 3))
    b = (rng.random((n, 10)) < 1 / (1 + np.exp(-z @ rng.normal(size=(2, 10))))).astype(np.int64)
    c = z @ rng.normal(size=(2, 16)) + 0.1 * rng.normal(size=(n, 16))
    mask = rng.random((n, 3)) > 0.3
    mask[~mask.any(1), 0] = True
    if nan_absent:
        a[~mask[:, 0]] = np.nan
        c[~mask[:, 2]] = np.nan
    np.savez(folder / "my.npz", a=a, b=b, c=c)
    np.save(folder / "mask.npy", mask)
    return folder / "my.npz", folder / "mask.npy", {"a": a, "b": b, "c": c}, mask


def _train_npz(tmp_path, out="run", *extra, data_seed=0):
    npz, mask, _, _ = _npz(tmp_path, seed=data_seed)
    return main(["train", "--npz", str(npz), "--mask", str(mask), "--likelihood", "normal,bernoulli,normal",
                 "--out", str(tmp_path / out), *SMALL, *extra])


def _files(folder, times=True):
    return {p: (p.read_bytes(), p.stat().st_mtime_ns if times else 0) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_npz_with_mask_trains_evaluates_samples_and_reloads(tmp_path):
    npz, _, arrays, mask = _npz(tmp_path)
    assert _train_npz(tmp_path) == 0
    out = tmp_path / "run"
    record = json.loads((out / "data.json").read_text())
    assert [c["size"] for c in record["components"]] == [3, 10, 16]
    assert abs(record["absent_fraction"] - (1 - mask.mean())) < 1e-12 and 0.2 < record["absent_fraction"] < 0.4
    split = np.load(out / "split.npz")
    assert len(split["test"]) == 18 and len(split["train"]) == 72  # round(90 * 0.2)
    assert sorted(np.concatenate([split["train"], split["test"]])) == list(range(90))
    assert record["split"] == {"test_fraction": 0.2, "seed": 0, "num_train": 72, "num_test": 18}

    from pyro_mcvae import load_model

    model = load_model(out)  # the checkpoint alone: method, sizes, per-component likelihoods
    assert model.method == "gmrf" and list(model.component_dims) == [3, 10, 16]
    assert [lik.kind for lik in model.likelihoods] == ["normal", "bernoulli", "normal"]

    assert main(["evaluate", "--run", str(out), "--set", "evaluate.likelihood_samples=8"]) == 0
    saved = json.loads((out / "metrics.json").read_text())
    assert {"command", "versions", "device", "seed", "config", "data"} <= set(saved)
    metrics = saved["metrics"]
    complete = split["test"][mask[split["test"]].all(1)]
    assert metrics["num_test_rows"] == 18 and metrics["num_complete_test_rows"] == len(complete) > 0
    for key in ("reconstruction_mse", "given_others_mse", "train_mean_mse"):
        assert set(metrics[key]) == {"0", "1", "2"}
    assert metrics["likelihood"]["joint"]["num_samples"] == 8
    assert set(metrics["likelihood"]["given_others"]) == {"0", "1", "2"}
    # The evaluation ran the trained model on the recorded test rows: the reloaded model's
    # reconstruction of those rows (deterministic: posterior mean, decoder mean) is the one saved.
    evaluation = np.load(out / "evaluation.npz")
    test = [torch.tensor(arrays[k][complete], dtype=torch.float32) for k in "abc"]
    for k, name in enumerate("abc"):
        assert np.array_equal(evaluation[f"test_{name}"], test[k].numpy())
        assert np.allclose(evaluation[f"reconstruction_{name}"], model.reconstruct(test)[k].numpy(), atol=1e-6)
        mse = float(((evaluation[f"reconstruction_{name}"] - test[k].numpy()) ** 2).mean())
        assert abs(metrics["reconstruction_mse"][str(k)] - mse) < 1e-5
    assert main(["sample", "--run", str(out), "--num", "4"]) == 0
    samples = np.load(out / "samples.npz")
    assert samples["unconditional_b"].shape == (4, 10) and samples["given_others_c"].shape == (4, 16)
    assert ((samples["unconditional_b"] >= 0) & (samples["unconditional_b"] <= 1)).all()  # probabilities


def test_split_is_seeded_and_reruns_are_reused_or_refused(tmp_path, capsys):
    assert _train_npz(tmp_path) == 0
    assert _train_npz(tmp_path, "again") == 0  # same seed: same split
    assert np.array_equal(np.load(tmp_path / "run" / "split.npz")["test"], np.load(tmp_path / "again" / "split.npz")["test"])
    assert _train_npz(tmp_path, "other", "--seed", "1") == 0
    assert not np.array_equal(np.load(tmp_path / "run" / "split.npz")["test"],
                              np.load(tmp_path / "other" / "split.npz")["test"])
    assert _same_losses(tmp_path / "run", tmp_path / "again")  # same seed: same initial weights, same run
    kept = _files(tmp_path / "run", times=False)
    assert _train_npz(tmp_path) == 0  # the same command again: the finished run is reused
    assert _files(tmp_path / "run", times=False) == kept
    before = _files(tmp_path / "run")
    capsys.readouterr()
    assert _train_npz(tmp_path, "run", "--test-fraction", "0.3") == 2  # another split into the same run
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "trained on other data or another split" in err and "test_fraction" in err
    assert _train_npz(tmp_path, data_seed=5) == 2  # other data in the same file
    assert "inputs_sha256" in capsys.readouterr().err
    assert main(["evaluate", "--run", str(tmp_path / "run")]) == 2  # evaluate refuses the changed file too
    assert "trained on other data" in capsys.readouterr().err
    assert _files(tmp_path / "run") == before  # nothing a refusal touched
    assert _train_npz(tmp_path, "run", "--restart", data_seed=5) == 0  # asked for: trained again on the new data
    assert json.loads((tmp_path / "run" / "data.json").read_text())["inputs_sha256"] != \
        json.loads((tmp_path / "again" / "data.json").read_text())["inputs_sha256"]


def _same_losses(a, b):
    return json.loads((a / "training.json").read_text())["final_loss"] == \
        json.loads((b / "training.json").read_text())["final_loss"]


def _images(folder, n=12, sizes={"grey": (6, 5), "colour": (4, 4)}):
    """A folder of tiny PNGs per component (greyscale and RGB); returns the pixels written."""
    from PIL import Image

    rng = np.random.default_rng(1)
    written = {}
    for name, (h, w) in sizes.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        colour = name == "colour"
        pixels = rng.integers(0, 256, size=(n, h, w, 3) if colour else (n, h, w), dtype=np.uint8)
        for i in range(n):
            Image.fromarray(pixels[i], "RGB" if colour else "L").save(folder / name / f"{i:03d}.png")
        written[name] = pixels.transpose(0, 3, 1, 2) if colour else pixels[:, None]
    return written


def test_image_folders_train_evaluate_and_draw_figures(tmp_path):
    written = _images(tmp_path)
    out = tmp_path / "run"
    assert main(["train", "--images", str(tmp_path / "grey"), str(tmp_path / "colour"), "--likelihood", "bernoulli",
                 "--test-fraction", "0.25", "--out", str(out), *SMALL]) == 0
    assert json.loads((out / "data.json").read_text())["components"][1]["shape"] == [3, 4, 4]
    assert main(["evaluate", "--run", str(out), "--set", "evaluate.likelihood_samples=0"]) == 0
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["0_grey.png", "1_colour.png"]
    evaluation = np.load(out / "evaluation.npz")
    test = np.load(out / "split.npz")["test"]
    for name in ("grey", "colour"):  # the files' pixels in [0, 1], in their shape, rows by file name
        assert np.array_equal(evaluation[f"test_{name}"], written[name][test].astype(np.float32) / 255)
    assert evaluation["given_others_colour"].shape == (3, 3, 4, 4)


def test_read_component_files_pairs_by_name_and_splits_by_seed(tmp_path):
    from PIL import Image

    from pyro_mcvae.data.component_files import read_component_files, split_rows

    written = _images(tmp_path, n=3)
    (tmp_path / "grey" / "notes.txt").write_text("not an image")  # other files are ignored
    for i in range(3):  # the second folder's files in JPEG-free lossless formats, other extensions
        (tmp_path / "colour" / f"{i:03d}.png").rename(tmp_path / "colour" / f"{i:03d}.bmp")
    files = read_component_files(images=[tmp_path / "grey", tmp_path / "colour"])
    assert files.row_names == ["000", "001", "002"] and files.sizes == [30, 48]
    assert np.array_equal(files.data[1].reshape(3, 3, 4, 4), written["colour"] / np.float32(255))
    assert Image.open(tmp_path / "colour" / "000.bmp").mode == "RGB"
    train, test = split_rows(10, 0.3, seed=4)
    assert len(test) == 3 and sorted([*train, *test]) == list(range(10))
    assert np.array_equal(split_rows(10, 0.3, seed=4)[1], test)
    assert any(not np.array_equal(split_rows(10, 0.3, seed=s)[1], test) for s in range(5, 8))


def _bad_inputs(tmp_path):
    """(argv, what the one line must say) for each bad input."""
    from PIL import Image

    npz, mask, arrays, _ = _npz(tmp_path, n=20)
    np.savez(tmp_path / "rows.npz", a=np.zeros((20, 3)), b=np.zeros((19, 2)))
    np.savez(tmp_path / "text.npz", a=np.array([["x"]] * 20), b=np.zeros((20, 2)))
    np.save(tmp_path / "wide_mask.npy", np.ones((20, 4), bool))
    np.save(tmp_path / "two_mask.npy", np.full((20, 3), 2))
    np.savez(tmp_path / "nan.npz", a=arrays["a"], b=arrays["b"])
    np.savez(tmp_path / "big.npz", a=np.zeros((20, 3)), b=np.full((20, 2), 3.0))
    _images(tmp_path, n=4)
    Image.fromarray(np.zeros((7, 7), np.uint8), "L").save(tmp_path / "grey" / "004.png")
    _images(tmp_path / "pair", n=3, sizes={"grey": (6, 5), "colour": (4, 4)})
    (tmp_path / "pair" / "colour" / "002.png").rename(tmp_path / "pair" / "colour" / "009.png")
    out = ["--out", str(tmp_path / "bad")]
    npz_args = ["train", "--npz", str(npz), *out]
    return [
        (["train", "--npz", str(tmp_path / "none.npz"), *out], "data file"),
        (["train", "--npz", str(tmp_path / "rows.npz"), *out], "same number of rows"),
        (["train", "--npz", str(tmp_path / "text.npz"), *out], "must hold numbers"),
        ([*npz_args, "--mask", str(tmp_path / "wide_mask.npy")], "must have shape (N=20, M=3)"),
        ([*npz_args, "--mask", str(tmp_path / "two_mask.npy")], "booleans or 0/1"),
        ([*npz_args, "--mask", str(mask), "--likelihood", "normal,poisson,normal"], "likelihood"),
        ([*npz_args, "--mask", str(mask), "--likelihood", "normal,bernoulli"], "one likelihood per component"),
        (["train", "--npz", str(tmp_path / "nan.npz"), *out], "NaN or infinite values"),
        (["train", "--npz", str(tmp_path / "big.npz"), "--likelihood", "bernoulli", *out], "values in [0, 1]"),
        ([*npz_args, "--mask", str(mask), "--test-fraction", "1"], "test_fraction must be a number in [0, 1)"),
        ([*npz_args, "--mask", str(mask), "--arrays", "a,z"], "no array 'z'"),
        ([*npz_args, "--mask", str(mask), "--set", "data.folds=3"], "unknown setting(s) ['folds']"),
        ([*npz_args, "--mask", str(mask), "--model", "gmfr"], "gmfr"),
        (["train", "--images", str(tmp_path / "grey"), *out], "one size"),
        (["train", "--images", str(tmp_path / "pair" / "grey"), str(tmp_path / "pair" / "colour"), *out],
         "different file names"),
        (["train", "--images", str(tmp_path / "nowhere"), *out], "image folder"),
        (["train", "--npz", str(npz)], "--out DIR is required"),
        (["train", "--config", str(tmp_path / "run.toml"), "--npz", str(npz), *out], "not both"),
        (["train", "--config", str(tmp_path / "run.toml"), "--epochs", "3"], "--set"),
        (["train"], "needs --config"),
        (["evaluate", "--run", str(tmp_path)], "no config.json"),
    ]


def test_each_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    cases = _bad_inputs(tmp_path)
    (tmp_path / "run.toml").write_text('dataset = "files"\n')
    for argv, expected in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("pyro-mcvae: error:") and err.count("\n") == 1, (argv, err)
        assert expected in err, (argv, err)
    assert not (tmp_path / "bad" / "train").exists()  # refused before any training


def test_toml_config_mixes_arrays_and_image_folders(tmp_path):
    """``dataset = "files"`` in a config file: .npz arrays (chosen and ordered by ``arrays``)
    followed by an image folder, rows paired by position and sorted file name."""
    _images(tmp_path, n=12, sizes={"grey": (6, 5)})
    x = np.arange(12 * 3, dtype=np.float32).reshape(12, 3) / 36
    np.savez(tmp_path / "vec.npz", unused=np.zeros((12, 1)), x=x)
    config = tmp_path / "run.toml"
    config.write_text(f"""
dataset = "files"
out = "{tmp_path / 'run'}"
device = "cpu"
[data]
npz = "{tmp_path / 'vec.npz'}"
arrays = ["x"]
images = ["{tmp_path / 'grey'}"]
test_fraction = 0.25
split_seed = 3
[model]
method = "mmvae"
hidden = [8]
likelihood = ["normal", "bernoulli"]
[train]
epochs = 1
batch_size = 16
[evaluate]
likelihood_samples = 0
max_rows = 2
""")
    assert main(["train", "--config", str(config)]) == 0
    assert main(["evaluate", "--config", str(config)]) == 0
    out = tmp_path / "run"
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["components"] == ["x", "grey"] and metrics["num_rows"] == 2 and "likelihood" not in metrics
    assert [p.rsplit("/", 1)[-1] for p in metrics["figures"]] == ["1_grey.png"]
    test = np.load(out / "split.npz")["test"]
    from pyro_mcvae.data.component_files import split_rows

    assert np.array_equal(test, split_rows(12, 0.25, 3)[1])  # the recorded split is the seeded one
    assert np.array_equal(np.load(out / "evaluation.npz")["test_x"], x[test[:2]])
