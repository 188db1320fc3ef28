"""Every command and code block of the newcomer's pages runs as written: the README's "Your own
data" section, docs/architecture.md and docs/tour.md. Each runs in a fresh directory (its outputs
land there) with this interpreter's ``bin`` first on ``PATH`` (``python`` and ``pyro-mcvae`` are
this environment's) and ``examples/`` linked in. A command that takes more than ~20 s is marked
slow. A page that gains a command this test does not know fails ``test_every_command_is_covered``."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _blocks(text: str) -> list[tuple[str, str]]:
    """``(language, body)`` of each fenced code block, in order."""
    return re.findall(r"```(\w+)\n(.*?)```", text, re.S)


def _readme_section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("### Your own data")
    return text[start:text.index("\n##", start + 4)]


def _shell_lines(body: str) -> list[str]:
    """The commands of a bash block (comments and blank lines left out)."""
    return [line for line in body.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _inline_python_commands(text: str) -> list[str]:
    """Inline ``python -c "..."`` commands (which a page may wrap over lines)."""
    return [" ".join(c.split()) for c in re.findall(r'`(python -c "[^`]*")`', text)]


def _run(kind: str, body: str, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "MPLBACKEND": "Agg"}
    if not (cwd / "examples").exists():
        (cwd / "examples").symlink_to(REPO / "examples")
    command = [sys.executable, "-c", body] if kind == "python" else ["bash", "-e", "-c", body]
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{body}\n--- stderr ---\n{proc.stderr[-3000:]}"
    return proc


# -- what each page holds, and how the test runs it ------------------------------------------------

TOUR_COMMANDS = ["python examples/tour.py --out results/tour", "python examples/tour.py --fast --out results/tour-fast"]


def test_every_command_is_covered():
    """The pages hold exactly the commands the tests below run (a new one must be added here)."""
    readme = _blocks(_readme_section())
    assert [lang for lang, _ in readme] == ["python", "bash", "python"]
    architecture = (REPO / "docs" / "architecture.md").read_text()
    assert [lang for lang, _ in _blocks(architecture)] == ["python"]
    assert len(_inline_python_commands(architecture)) == 1
    tour = _blocks((REPO / "docs" / "tour.md").read_text())
    assert [lang for lang, _ in tour] == ["bash"]
    assert [line.split("#")[0].strip() for line in _shell_lines(tour[0][1])] == TOUR_COMMANDS


@pytest.mark.slow
def test_readme_own_data_section_runs(tmp_path):
    """Make the data, train, evaluate and sample from the command line, then the Python route."""
    (_, make), (_, commands), (_, api) = _blocks(_readme_section())
    _run("python", make, tmp_path)
    _run("bash", commands, tmp_path)
    run = tmp_path / "runs" / "mine"
    assert {"metrics.json", "evaluation.npz", "samples.npz", "split.npz", "data.json"} <= {p.name for p in run.iterdir()}
    _run("python", api, tmp_path)
    assert (tmp_path / "runs" / "api" / "checkpoint.pt").is_file()


def test_architecture_page_runs(tmp_path):
    """The import-time command prints a number; the 50-line method registers, builds, trains,
    reloads and trains through the command line, as the text after it says."""
    text = (REPO / "docs" / "architecture.md").read_text()
    (command,) = _inline_python_commands(text)
    assert float(_run("bash", command, tmp_path).stdout.strip()) > 0
    (method,) = [body for lang, body in _blocks(text) if lang == "python"]
    then = """
import numpy as np, torch
from pyro_mcvae import TrainConfig, build_model, fit, load_model
from pyro_mcvae.cli import main

torch.set_num_threads(1)
model = build_model("toy", [2, 2, 2])
fit(model, torch.rand(64, 3, 2), TrainConfig(epochs=1, batch_size=32), out_dir="runs/fit", progress=False)
assert load_model("runs/fit").method == "toy"
np.savez("my.npz", a=np.random.rand(40, 2), b=np.random.rand(40, 2), c=np.random.rand(40, 2))
assert main(["train", "--npz", "my.npz", "--model", "toy", "--out", "runs/toy", "--epochs", "1",
             "--device", "cpu"]) == 0
assert load_model("runs/toy").method == "toy"
"""
    _run("python", method + then, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("command", TOUR_COMMANDS)
def test_tour_commands_run(tmp_path, command):
    proc = _run("bash", command, tmp_path)
    assert "6. NN-MRF chains saved" in proc.stdout
