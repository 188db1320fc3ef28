"""Smoke test: every benchmark script runs with ``--quick`` and prints a table with a ratio."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import run_example

ROOT = Path(__file__).resolve().parents[1]
# The six longest entries (8-17 s each, 65 s in all on 2 cores) run only with `make test-slow`, so
# that `make test` stays under its 10 minutes, install included. They time the library rather than
# check it; `polymnist_step.py` keeps its default entry here.
_SLOW = pytest.mark.slow
SCRIPTS = [pytest.param("step_time.py", marks=_SLOW), pytest.param("conditional_sampling.py", marks=_SLOW),
           "pyro_overhead.py", pytest.param("scaling.py", marks=_SLOW), "image_nets.py",
           pytest.param("cpu_image_step.py --profile --variants resnet-bf16 mlp-subset1", marks=_SLOW),
           "bike_render.py", "completion.py", "ssim.py", "likelihood_strata.py",
           "polymnist_step.py", pytest.param("polymnist_step.py --dataset bikes", marks=_SLOW),
           pytest.param("polymnist_step.py --models gmrf mopoe --mopoe-strata every one", marks=_SLOW),
           pytest.param("floor.py", marks=_SLOW),
           pytest.param("step_before_after.py --before . --sizes copula", marks=_SLOW)]  # against itself
# A markdown table cell holding a ratio such as "| 1.23x |" or "| 1,234.5x |".
RATIO_CELL = re.compile(r"\|\s*\d[\d,]*\.\d+x\s*\|")


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_quick(script, tmp_path, monkeypatch):
    """In this process (``helpers.run_example``: the script as ``python benchmarks/NAME.py`` would
    run it, without a second interpreter's start-up), from the repository root;
    ``test_cuda_request_fails_clearly_without_cuda`` runs a benchmark as its own process."""
    out_json = tmp_path / "result.json"
    monkeypatch.chdir(ROOT)
    # One torch thread: the smoke test checks that the scripts work, not their timings, and a
    # single thread keeps it fast when other processes compete for the cores.
    proc = run_example(ROOT / "benchmarks" / script.split()[0],
                       [*script.split()[1:], "--quick", "--threads", "1", "--json", out_json])
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout}\n{proc.stderr}"
    header = [line for line in proc.stdout.splitlines() if line.startswith("|") and "ratio" in line]
    assert header, f"{script} printed no table with a ratio column:\n{proc.stdout}"
    assert RATIO_CELL.search(proc.stdout), f"{script} printed no ratio value:\n{proc.stdout}"
    payload = json.loads(out_json.read_text())
    for key in ("command", "torch", "pyro", "device", "torch_num_threads", "seed", "results"):
        assert key in payload, f"{script}: --json output lacks {key!r}"
    assert payload["results"]


def test_cuda_request_fails_clearly_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "conditional_sampling.py"), "--quick",
         "--device", "cuda"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "cuda is not available" in proc.stderr.lower()


def _load_common():
    """``benchmarks/_common.py``, loaded from its file (the scripts import it as ``_common``)."""
    spec = importlib.util.spec_from_file_location("benchmarks_common", ROOT / "benchmarks" / "_common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_interleaved_timer_warms_up_then_rotates_the_order():
    import torch

    common = _load_common()
    calls = []
    alternatives = {name: (contextlib.nullcontext, lambda name=name: calls.append(name)) for name in "abc"}
    times = common.interleaved(alternatives, reps=3, inner=2, warmup=1, device=torch.device("cpu"))
    assert calls[:3] == ["a", "b", "c"]  # one warm-up call each
    assert "".join(calls[3:]) == "aabbcc" + "bbccaa" + "ccaabb"
    assert set(times) == set("abc")
    assert all(len(t) == 3 and min(t) >= 0 for t in times.values())


def test_common_quartiles_and_markdown_table():
    common = _load_common()
    assert common.quartiles([5, 1, 4, 2, 3]) == (2.0, 3.0, 4.0)
    assert common.markdown_table(["a", "b"], [[1, "x"]]) == "| a | b |\n|---|---|\n| 1 | x |"


def test_likelihood_estimators_script_on_a_tiny_trained_run(tmp_path, monkeypatch):
    """benchmarks/likelihood_estimators.py reads a copula run trained by the example and writes
    the conditional estimators per K (ratio, difference, and the plain difference of before);
    both scripts in this process."""
    run = tmp_path / "run"
    monkeypatch.chdir(ROOT)
    train = run_example(ROOT / "examples" / "copula.py", [
        "--epochs", "1", "--out", run, "--n-train", "512", "--n-test", "100", "--population-n", "500",
        "--likelihood-samples", "0", "--sampler-components", "0", "--no-progress", "--jobs", "1"])
    assert train.returncode == 0, train.stderr[-3000:]
    proc = run_example(ROOT / "benchmarks" / "likelihood_estimators.py", ["--run", run, "--tuples", "5",
                                                                          "--ks", "10", "40"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    payload = json.loads((run / "likelihood_estimators_gmrf.json").read_text())
    assert [r["K"] for r in payload["rows"]] == [10, 40] and "command" in payload
    for row in payload["rows"]:
        assert set(row) == {"K", "joint", "marginal x1", "ratio", "difference", "plain difference"}
        assert all(row[k]["min_ess"] >= 1 - 1e-6 for k in ("joint", "ratio", "difference", "plain difference"))
