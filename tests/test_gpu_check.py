"""``benchmarks/gpu_check.py``, the one-lease GPU check, on its CPU path (``--dry-run``): tiny
generated data, the timing workers (eager and ``aot_eager``-compiled steps of the library's
trainer), one run of ``examples/polymnist.py``, the results files, and the hard deadline."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(tmp_path, *args, timeout=600):
    cmd = [sys.executable, str(SCRIPT), "--dry-run", "--results", str(tmp_path / "res"), "--work",
           str(tmp_path / "work"), "--tag", "t", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_square_root_rule_and_the_order_of_the_timings():
    gpu_check = load_script()
    assert gpu_check.scaled_lr(128) == pytest.approx(1e-3)
    assert gpu_check.scaled_lr(512) == pytest.approx(2e-3)
    assert gpu_check.scaled_lr(1024) == pytest.approx(1e-3 * math.sqrt(8))
    args = gpu_check.parse([])  # the GPU defaults
    groups = gpu_check.timing_groups(args)
    # every model eagerly first (and the GMRF at batch 512), then the GMRF compiled at both
    # batches, then MMVAE+ compiled
    assert [(c["model"], c["compile"], c["batch"]) for c in groups[0]] == [
        *((m, "off", 128) for m in gpu_check.MODELS), ("gmrf", "off", 512)]
    assert groups[0][-1]["lr"] == pytest.approx(2e-3)
    assert [[(c["model"], c["compile"], c["batch"]) for c in g] for g in groups[1:]] == [
        [("gmrf", "default", 128)], [("gmrf", "default", 512)], [("mmvaeplus", "default", 128)]]


def test_runs_take_the_compile_mode_with_most_steps_in_their_budget():
    """Compilation costs its first steps' time: worth it in a long budget, not in a short one."""
    gpu_check = load_script()
    rows = [{"model": "gmrf", "batch": 128, "compile": "off", "warmup": 10, "first_steps_s": 2.0, "ms_median": 50.0},
            {"model": "gmrf", "batch": 128, "compile": "default", "warmup": 13, "first_steps_s": 80.0,
             "ms_median": 20.0},
            {"model": "gmrf", "batch": 512, "compile": "default", "warmup": 13, "first_steps_s": 1.0, "ms_median": 1.0},
            {"model": "mmvaeplus", "batch": 128, "compile": "off", "error": "RuntimeError: ..."}]
    report = {"phases": {"timings": {"configs": rows}}}
    assert gpu_check.best_compile(report, "gmrf", 128, 60.0) == "off"  # 1,170 steps against 13
    assert gpu_check.best_compile(report, "gmrf", 128, 600.0) == "default"  # 26,013 against 11,970
    assert gpu_check.best_compile(report, "mmvaeplus", 128, 600.0) == "off"  # nothing measured


def test_tags_never_overwrite(tmp_path):
    gpu_check = load_script()
    assert gpu_check._free_tag(tmp_path, "2026-12-07_h100") == "2026-12-07_h100"
    (tmp_path / "gpu_check_2026-12-07_h100.json").write_text("{}")
    assert gpu_check._free_tag(tmp_path, "2026-12-07_h100") == "2026-12-07_h100-2"
    (tmp_path / "gpu_check_2026-12-07_h100-2_gmrf_curve.csv").write_text("")
    assert gpu_check._free_tag(tmp_path, "2026-12-07_h100") == "2026-12-07_h100-3"


def test_timing_worker_times_the_trainers_steps(tmp_path):
    """The worker trains a configuration with the library's trainer and records the steps after
    its warm-up; a configuration that cannot fit before ``until`` is skipped, one that fails is
    recorded with its error and the next one still runs."""
    import time

    gpu_check = load_script()
    args = gpu_check.parse(["--dry-run", "--work", str(tmp_path)])
    check = type("C", (), {"args": args, "work": tmp_path})()
    data = gpu_check.make_data(check)
    ok = {"model": "gmrf", "compile": "off", "batch": 16, "lr": 1e-3, "warmup": 1, "steps": 2, "limit_s": 60.0}
    bad = ok | {"batch": 0}  # refused by TrainConfig
    late = ok | {"limit_s": 1e6}
    out = tmp_path / "t.jsonl"
    gpu_check.time_configs([bad, ok, late], data, time.time() + 600, out, dry_run=True)
    failed, timed, skipped = [json.loads(line) for line in out.read_text().splitlines()]
    assert failed["error"].startswith("ValueError: batch_size must be >= 1")
    assert timed["timed_steps"] == 2 and 0 < timed["ms_q1"] <= timed["ms_median"] <= timed["ms_q3"]
    assert timed["graphs"] == 0 and timed["parameters"] > 0
    assert skipped["skipped"] == "not enough time left"


@pytest.mark.slow
def test_dry_run_times_steps_and_runs_the_gmrf(tmp_path):
    """The whole CPU path (about 60 s of CPU): workers, compiled timing, one example run, files."""
    proc = run(tmp_path, "--models", "gmrf", "--compile-models", "gmrf", "--batches", "--run-models", "gmrf",
               "--deadline", "500", "--run-reserve", "60")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = tmp_path / "res"
    report = json.loads((res / "gpu_check_t.json").read_text())
    configs = report["phases"]["timings"]["configs"]
    assert [(c["model"], c["compile"]) for c in configs] == [("gmrf", "off"), ("gmrf", "aot_eager")]
    for c in configs:
        assert c["ms_median"] > 0 and c["timed_steps"] == 3, c
    assert configs[0]["graphs"] == 0 and configs[1]["graphs"] >= 3  # the compiled networks ran
    gmrf = report["phases"]["runs"]["gmrf"]
    assert gmrf["exit_status"] == 0 and gmrf["batch"] == 32
    assert gmrf["training"]["steps"] >= 1 and 0 <= gmrf["summary"]["conditional_coherence"] <= 1
    assert (res / "gpu_check_t_gmrf_results.json").is_file()
    assert (res / "gpu_check_t_gmrf_curve.csv").read_text().startswith("step,seconds,eval_coherence_1")
    md = (res / "gpu_check_t.md").read_text()
    assert "| gmrf | 32 | 5.00e-04 | aot_eager |" in md and "| gmrf | " in md.split("| run |")[1]
    assert "examples/polymnist.py" in (res / "gpu_check_t_log.txt").read_text()


@pytest.mark.slow  # 10 s: keep make test short
def test_deadline_skips_what_does_not_fit(tmp_path):
    """With 20 s in all (15 s of them the closing margin) nothing is started, and the report says so."""
    proc = run(tmp_path, "--deadline", "20", timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "res" / "gpu_check_t.json").read_text())
    configs = report["phases"]["timings"]["configs"]
    assert configs and all(c.get("skipped") == "not enough time left" for c in configs)
    assert all("not enough time left" in r["skipped"] for r in report["phases"]["runs"].values())
