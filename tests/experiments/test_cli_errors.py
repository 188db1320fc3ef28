"""``pyro-mcvae`` ends every user error, and Ctrl-C, with one line on stderr and exit status 2 (no
traceback), through one mechanism for ``run`` and the file commands; a refused command changes
nothing saved; after Ctrl-C the line says where the checkpoint is, and the same command resumes."""

import pytest

from pyro_mcvae.cli import main
from pyro_mcvae.infer.trainer import Trainer

RUN = ["run", "copula", "--epochs", "2", "--n-train", "64", "--n-test", "32", "--population-n", "200", "--hidden",
       "8", "--batch-size", "32", "--jobs", "1", "--no-progress", "--likelihood-samples", "0",
       "--sampler-components", "0"]

CONFIG = """
dataset = "{dataset}"
out = "{out}"
device = "cpu"
[data]
n_train = 64
n_test = 32
[model]
method = "gmrf"
hidden = [8]
[train]
epochs = 2
batch_size = 32
"""


def _files(folder):
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line(capsys, prog: str, after_progress: bool = False) -> str:
    """The command's message on stderr: one line starting with ``prog``, and nothing else (with
    ``after_progress``: the last line, after the progress bars of the training it stopped)."""
    err = capsys.readouterr().err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
    ours = [line for line in lines if line.startswith(f"{prog}: ")]
    assert "Traceback" not in err and len(ours) == 1 and lines[-1] == ours[0], err
    assert after_progress or len(lines) == 1, err
    return ours[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished (two-epoch) copula run, made once: what the refused commands must not change."""
    from pyro_mcvae.experiments import get_experiment

    out = tmp_path_factory.mktemp("finished")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(type(get_experiment("copula")), "figures", lambda *args: [])  # drawing is slow
        assert main([*RUN, "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("args, says", [
    (["--lr", "-1"], "lr must be positive"),
    (["--lr", "abc"], "invalid float value: 'abc'"),
    (["--latent-dim", "0"], "block_dim must be a positive integer, got 0"),
    (["--hidden", "0"], "hidden must be MLP hidden sizes (positive integers)"),
    (["--n-train", "0"], "--n-train and --n-test >= 2"),
    (["--no-such-option"], "unrecognized arguments: --no-such-option"),
])
def test_run_refuses_bad_settings_in_one_line_and_changes_nothing(finished, args, says, capsys):
    before = _files(finished)
    capsys.readouterr()
    try:
        status = main([*RUN, "--out", str(finished), *args])
    except SystemExit as stop:  # argparse's own errors exit from inside main
        status = stop.code
    assert status == 2
    assert says in one_line(capsys, "pyro-mcvae run copula")
    assert _files(finished) == before


def test_run_with_a_missing_data_directory_is_one_line(tmp_path, capsys):
    assert main(["run", "bikes", "--data-dir", str(tmp_path / "missing"), "--out", str(tmp_path / "out"),
                 "--no-progress"]) == 2
    assert "missing" in one_line(capsys, "pyro-mcvae run bikes")


@pytest.mark.parametrize("override, says", [
    ("train.lr=-1", "lr must be positive"),
    ("model.block_dim=0", "block_dim must be a positive integer, got 0"),
    ("model.hidden=[0]", "hidden must be MLP hidden sizes"),
    ("model.likelihood='bernoulli'", "bernoulli likelihood takes values in [0, 1]"),
])
def test_file_commands_refuse_bad_settings_and_data_in_one_line(tmp_path, override, says, capsys):
    cfg = tmp_path / "run.toml"
    # heavy_tails: data beyond [0, 1] (the copula's lie in it)
    cfg.write_text(CONFIG.format(out=tmp_path / "out", dataset="heavy_tails"))
    assert main(["train", "--config", str(cfg), "--set", override]) == 2
    assert says in one_line(capsys, "pyro-mcvae")
    assert not (tmp_path / "out" / "train" / "checkpoint.pt").exists()


def interrupt_after(monkeypatch, steps: int):
    """Ctrl-C during training step ``steps + 1`` (as the KeyboardInterrupt SIGINT raises)."""
    real, calls = Trainer._step, []

    def step(self, rows):
        calls.append(1)
        if len(calls) > steps:
            raise KeyboardInterrupt
        return real(self, rows)

    monkeypatch.setattr(Trainer, "_step", step)


def test_ctrl_c_says_where_the_checkpoint_is_and_the_same_command_resumes(tmp_path, monkeypatch, capsys):
    from pyro_mcvae.infer import load_checkpoint

    cfg = tmp_path / "run.toml"
    cfg.write_text(CONFIG.format(out=tmp_path / "out", dataset="copula"))
    command = ["train", "--config", str(cfg)]
    interrupt_after(monkeypatch, 3)  # two steps per epoch: in the second epoch
    assert main(command) == 2
    line = one_line(capsys, "pyro-mcvae", after_progress=True)
    checkpoint = tmp_path / "out" / "train" / "checkpoint.pt"
    assert f"saved in {checkpoint}" in line and "the same command resumes it" in line
    assert load_checkpoint(checkpoint)["loop"]["step"] == 3
    monkeypatch.undo()
    assert main(command) == 0
    assert load_checkpoint(checkpoint)["loop"]["step"] == 4  # resumed: 4 steps in all, not 3 + 4


def test_ctrl_c_in_the_first_step_and_before_training(tmp_path, monkeypatch, capsys):
    interrupt_after(monkeypatch, 0)
    assert main([*RUN, "--out", str(tmp_path)]) == 2
    line = one_line(capsys, "pyro-mcvae run copula")
    # The first step had not finished: the checkpoint written at the interruption holds step 0.
    assert "the same command resumes it" in line and str(tmp_path / "gmrf" / "seed0" / "checkpoint.pt") in line

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "__init__", interrupted)  # before training starts: nothing saved
    assert main([*RUN, "--out", str(tmp_path / "other")]) == 2
    assert "interrupted before a checkpoint was saved" in one_line(capsys, "pyro-mcvae run copula")
