"""The GPU check of one short lease (issue 30, item 4): step timings of every PolyMNIST model,
eager and compiled, then the GMRF's and MMVAE+'s runs of the ``gpu`` preset as far as the time
allows, written to one results folder.

    PYTHONPATH=. python3 benchmarks/gpu_check.py --results docs/results [--deadline 540] [--tag TAG]
    PYTHONPATH=. python3 benchmarks/gpu_check.py --dry-run --results /tmp/x   # CPU, tiny, seconds

Phases, each inside the hard ``--deadline`` (seconds from the start, default 540: one device call
of at most 600 s), every result written as soon as it exists:

1. **data**: PolyMNIST generated from MNIST and the backgrounds (``--data-root``, default
   ``shared/data`` in the repository when present, else ``../shared/data``), ``.pt`` layout.
2. **timings**: the ``gpu`` preset's models (ResNets width 64, bf16 autocast on CUDA, data on the
   device, batch 128, each method's own objective) trained by the library's own trainer for a few
   steps; per configuration the time of the first steps (compilation included) and the median and
   quartiles of the steps after them. Eager first for every model (and the GMRF at the larger
   ``--batches``, learning rate by the square-root rule), then the GMRF compiled
   (``--compile-modes``) at each batch, then the other ``--compile-models`` compiled.
   Configurations run in worker processes with their own time limit, so a failure or a hang costs
   one configuration, not the lease.
3. **runs**: ``examples/polymnist.py --preset gpu`` for ``--run-models`` (GMRF, then MMVAE+), each
   with a training budget from the time left (``--run-share``) and the compile mode the timings
   give the most steps in it, its coherence curve every 250 steps and the final evaluation (our judges trained one epoch,
   MoPoE-VAE's judges when found, FID off, log-likelihoods on 50 tuples).

Files in ``--results`` (never overwritten: the tag is dated, a suffix added when taken):
``gpu_check_<tag>.json`` (everything), ``gpu_check_<tag>.md`` (tables), ``gpu_check_<tag>_log.txt``
(the workers' output), ``gpu_check_<tag>_<model>_curve.csv`` and ``_results.json`` per run.
``--dry-run`` does all of it on the CPU on tiny generated data (narrow networks, 3 modalities, a
few steps, ``aot_eager`` compilation) in well under a minute: the test of this script.

Learning rate for larger batches: ``lr = 1e-3 * sqrt(batch / 128)`` (the square-root rule for
Adam; docs/results/polymnist.md, "The GPU preset").
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("gmrf", "mvae", "mmvae", "mopoe", "mmvaeplus")
BASE_BATCH, BASE_LR = 128, 1e-3
#: Seconds a run needs besides its training budget: start-up, data, judges, the final
#: evaluation on 10,000 test tuples (68 s measured on an H200 for the GMRF, 2026-11-26).
RUN_OVERHEAD_S = 100.0
#: Seconds a timing configuration is allowed at most (compilation included).
CONFIG_LIMIT_S = {"off": 60.0, "default": 200.0}
#: Seconds left unused at the end (writing the files, the device's transfers).
MARGIN_S = 15.0


def scaled_lr(batch: int, base_lr: float = BASE_LR, base_batch: int = BASE_BATCH) -> float:
    """The square-root rule for Adam: ``base_lr * sqrt(batch / base_batch)``."""
    return base_lr * math.sqrt(batch / base_batch)


# -- the timing worker (a child process) ---------------------------------------------------------
def time_configs(configs: list[dict], data_dir: str, until: float, out: Path, dry_run: bool) -> None:
    """Train each configuration a few steps with the library's trainer; append one JSON line per
    configuration to ``out``. Stops before ``until`` (``time.time()``), skipping what would not fit."""
    import torch

    from pyro_mcvae.experiments.base import flat_components, to_float
    from pyro_mcvae.experiments.polymnist import PolyMNISTRun, build_polymnist_model, train_config
    from pyro_mcvae.data.polymnist import load_polymnist
    from pyro_mcvae.infer import fit
    from pyro_mcvae.infer.callbacks import Callback, StepBudget

    if dry_run:
        torch.set_num_threads(1)
    device = "cpu" if dry_run else "cuda"
    small = dict(width=4, num_modalities=3, latent_dim=4) if dry_run else {}
    train = load_polymnist(data_dir, "train", list(range(small.get("num_modalities", 5))), cache=True)
    data = flat_components(train.images.to(device))

    class StepTimes(Callback):
        def __init__(self):
            self.times = [time.perf_counter()]

        def on_step_end(self, trainer, step):  # the step's loss was read: the GPU has finished
            self.times.append(time.perf_counter())

    for cfg in configs:
        record = dict(cfg)
        if time.time() + cfg["limit_s"] * 0.5 > until:
            record["skipped"] = "not enough time left"
            _append(out, record)
            continue
        try:
            from torch._dynamo.utils import counters

            counters.clear()
            run = PolyMNISTRun(model=cfg["model"], preset="gpu", device=device, batch_size=cfg["batch"],
                               lr=cfg["lr"], compile=cfg["compile"], **small)
            torch.manual_seed(0)
            model = build_polymnist_model(run)
            timer = StepTimes()
            warmup, steps = cfg["warmup"], cfg["steps"]
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            fit(model, data, train_config(run, device), progress=False, batch_transform=to_float,
                callbacks=[StepBudget(warmup + steps, progress=False), timer])
            times = timer.times
            per_step = [1e3 * (b - a) for a, b in zip(times[warmup:-1], times[warmup + 1:])]
            q = statistics.quantiles(per_step, n=4) if len(per_step) > 1 else per_step * 3
            record |= {"first_steps_s": round(times[warmup] - times[0], 2), "ms_median": round(q[1], 2),
                       "ms_q1": round(q[0], 2), "ms_q3": round(q[2], 2), "timed_steps": len(per_step),
                       "graphs": int(counters["stats"].get("unique_graphs", 0)),
                       "graph_breaks": int(sum(counters["graph_break"].values())),
                       "parameters": sum(p.numel() for p in model.parameters())}
            if device == "cuda":
                record["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        except Exception as err:  # noqa: BLE001 - recorded, the next configuration runs
            record["error"] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:500]
        _append(out, record)


def _append(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


# -- the parent -------------------------------------------------------------------------------------
class Check:
    """The run's clock, folders and report (written after every change)."""

    def __init__(self, args):
        self.args, self.started = args, time.monotonic()
        self.results = Path(args.results)
        self.results.mkdir(parents=True, exist_ok=True)
        self.work = Path(args.work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.tag = _free_tag(self.results, args.tag or _default_tag(args.dry_run))
        self.log = self.results / f"gpu_check_{self.tag}_log.txt"
        self.report = {"tag": self.tag, "deadline_s": args.deadline, "dry_run": args.dry_run,
                       "command": " ".join(sys.argv), "phases": {}}

    def left(self) -> float:
        return self.args.deadline - (time.monotonic() - self.started) - MARGIN_S

    def elapsed(self) -> float:
        return round(time.monotonic() - self.started, 1)

    def say(self, text: str) -> None:
        line = f"[gpu_check {self.elapsed():6.1f} s] {text}"
        print(line, flush=True)
        with open(self.log, "a") as f:
            f.write(line + "\n")

    def run(self, cmd: list[str], limit: float) -> tuple[int | None, float]:
        """``cmd`` in its own process group, output to the log, killed (group and all) after
        ``limit`` seconds; returns (exit status or None when killed, seconds)."""
        self.say(f"$ {' '.join(cmd)}  (limit {limit:.0f} s)")
        t0 = time.monotonic()
        env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                            "PYTHONUNBUFFERED": "1"}
        with open(self.log, "a") as log:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
            try:
                code = proc.wait(timeout=max(limit, 1.0))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                code = None
        return code, round(time.monotonic() - t0, 1)

    def save(self) -> None:
        self.report["elapsed_s"] = self.elapsed()
        (self.results / f"gpu_check_{self.tag}.json").write_text(json.dumps(self.report, indent=2, default=str))
        (self.results / f"gpu_check_{self.tag}.md").write_text(markdown(self.report))


def _default_tag(dry_run: bool) -> str:
    day = datetime.date.today().isoformat()
    if dry_run:
        return f"{day}_dryrun"
    try:
        import torch

        name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    except Exception:  # noqa: BLE001
        name = "unknown"
    short = re.sub(r"[^a-z0-9]+", "", name.lower().replace("nvidia", "").split()[0] if name.split() else name)
    return f"{day}_{short or 'gpu'}"


def _free_tag(folder: Path, tag: str) -> str:
    tag = re.sub(r"[^A-Za-z0-9._-]+", "-", tag)
    candidate, n = tag, 1
    while any(folder.glob(f"gpu_check_{candidate}.*")) or any(folder.glob(f"gpu_check_{candidate}_*")):
        n += 1
        candidate = f"{tag}-{n}"
    return candidate


def environment(check: Check) -> dict:
    import torch

    from pyro_mcvae.provenance import provenance

    device = "cuda" if torch.cuda.is_available() and not check.args.dry_run else "cpu"
    env = provenance(device)
    if shutil.which("nvidia-smi"):
        query = "name,driver_version,memory.total,clocks.max.sm,power.limit"
        out = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30)
        env["nvidia_smi"] = out.stdout.strip()
    from pyro_mcvae.nets.compiled import compile_unavailable

    env["compile_unavailable"] = compile_unavailable(device)
    return env


def make_data(check: Check) -> str:
    """The PolyMNIST folder the phases read (generated there unless present)."""
    args = check.args
    root = check.work / "polymnist"
    if (root / "manifest.json").is_file():
        return str(root)
    import torch

    if args.dry_run:
        from pyro_mcvae.data import write_polymnist

        g = torch.Generator().manual_seed(0)
        splits = {}
        for split, n in (("train", 64), ("test", 24)):
            labels = torch.randint(0, 10, (n,), generator=g)
            images = torch.randint(0, 60, (n, 3, 3, 28, 28), generator=g, dtype=torch.uint8)
            images[torch.arange(n)[:, None], torch.arange(3), :, (2 * labels + 4)[:, None]] = 255  # the digit
            splits[split] = (images, labels)
        write_polymnist(root, splits, layout="pt", progress=False)
        return str(root)
    from pyro_mcvae.data.polymnist import generate_polymnist

    shared = Path(args.data_root)
    generate_polymnist(root, shared / "mnist", shared / "polymnist" / "backgrounds", num_modalities=5, seed=0,
                       layout="pt", progress=False)
    return str(root)


def timing_groups(args) -> list[list[dict]]:
    """The configurations in the order they are worth the lease: every model eager (and the first
    compiled model at the larger batches), then the first compiled model at each batch, then the
    other compiled models. One group per worker process."""
    warmup, steps = (2, 3) if args.dry_run else (args.warmup, args.steps)
    modes = ["aot_eager"] if args.dry_run else args.compile_modes

    def cfg(model, compile_mode, batch):
        return {"model": model, "compile": compile_mode, "batch": batch, "lr": scaled_lr(batch),
                "warmup": warmup + (3 if compile_mode != "off" else 0), "steps": steps,
                "limit_s": CONFIG_LIMIT_S.get(compile_mode, CONFIG_LIMIT_S["default"])}

    base = 32 if args.dry_run else BASE_BATCH
    first = args.compile_models[0] if args.compile_models else args.models[0]
    groups = [[cfg(m, "off", base) for m in args.models] + [cfg(first, "off", b) for b in args.batches]]
    for m in args.compile_models:
        for mode in modes:
            groups.append([cfg(m, mode, base)])
            if m == first:
                groups += [[cfg(m, mode, b)] for b in args.batches]
    return groups


def timings(check: Check, data_dir: str) -> None:
    phase = check.report["phases"]["timings"] = {"configs": []}
    reserve = check.args.run_reserve
    for group in timing_groups(check.args):
        limit = min(sum(c["limit_s"] for c in group), check.left() - reserve)
        if limit < 0.5 * min(c["limit_s"] for c in group):
            phase["configs"] += [c | {"skipped": "not enough time left"} for c in group]
            continue
        out = check.work / f"timing_{len(phase['configs'])}.jsonl"
        out.unlink(missing_ok=True)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(group), "--data", data_dir,
               "--until", str(time.time() + limit), "--worker-out", str(out)] + (["--dry-run"] if check.args.dry_run else [])
        code, seconds = check.run(cmd, limit + 10)
        done = [json.loads(line) for line in out.read_text().splitlines()] if out.is_file() else []
        phase["configs"] += done
        missing = group[len(done):]
        reason = "worker killed at its time limit" if code is None else f"worker exited with status {code}"
        phase["configs"] += [c | {"error": reason} for c in missing]
        check.say(f"timings: {len(done)} of {len(group)} configurations in {seconds} s")
        check.save()


def best_compile(report: dict, model: str, batch: int, budget_s: float) -> str:
    """The compile mode that gave ``model`` the most steps in ``budget_s`` seconds at ``batch``,
    by the timings (the first steps' time, compilation included, then the median step; the run
    may compile faster from inductor's cache). ``off`` when nothing was measured."""
    rows = [c for c in report["phases"].get("timings", {}).get("configs", [])
            if c["model"] == model and "ms_median" in c and c["batch"] == batch]

    def steps(c):
        return c["warmup"] + max(budget_s - c["first_steps_s"], 0.0) * 1e3 / c["ms_median"]

    return max(rows, key=steps)["compile"] if rows else "off"


def runs(check: Check, data_dir: str) -> None:
    args = check.args
    phase = check.report["phases"]["runs"] = {}
    todo = list(args.run_models)
    for i, model in enumerate(todo):
        share = args.run_share if i == 0 and len(todo) > 1 else 1.0
        left = check.left()
        train_s = (left - RUN_OVERHEAD_S * (len(todo) - i)) * share if not args.dry_run else 3.0
        mode = best_compile(check.report, model, args.run_batch, train_s) if args.run_compile == "best" else args.run_compile
        record = phase[model] = {"compile": mode, "batch": args.run_batch, "lr": scaled_lr(args.run_batch)}
        if train_s < (2.0 if args.dry_run else 30.0) or left < (20.0 if args.dry_run else RUN_OVERHEAD_S):
            record["skipped"] = f"not enough time left ({left:.0f} s)"
            check.save()
            continue
        out = check.work / "runs"
        cmd = [sys.executable, str(ROOT / "examples" / "polymnist.py"), "--preset", "gpu", "--model", model,
               "--data-dir", data_dir, "--fid", "off", "--no-progress", "--out", str(out),
               "--minutes", f"{train_s / 60:.3f}", "--compile", record["compile"],
               "--batch-size", str(args.run_batch), "--lr", f"{record['lr']:.6g}", "--classifier-epochs", "1"]
        mopoe = Path(args.data_root) / "polymnist" / "mopoe_classifiers"
        cmd += ["--mopoe-classifiers", str(mopoe) if mopoe.is_dir() and not args.dry_run else ""]
        if args.dry_run:
            cmd += ["--device", "cpu", "--width", "4", "--modalities", "3", "--latent-dim", "4", "--curve-every", "2",
                    "--curve-tuples", "8", "--num-eval", "8", "--likelihood-samples", "0", "--sampler-components", "0"]
        else:
            cmd += ["--device", "cuda", "--curve-every", "250", "--curve-tuples", "1000", "--likelihood-tuples", "50"]
        record["minutes"] = round(train_s / 60, 3)
        code, seconds = check.run(cmd, check.left())
        record |= {"exit_status": code if code is not None else "killed at the deadline", "seconds": seconds}
        for name in ("results.json", "curve.csv"):
            src = out / model / name
            if src.is_file():
                dst = check.results / f"gpu_check_{check.tag}_{model}_{name}"
                shutil.copyfile(src, dst)
                record[name] = dst.name
        if (out / model / "results.json").is_file():
            rec = json.loads((out / model / "results.json").read_text())
            record["training"] = rec.get("training")
            record["summary"] = summary(rec)
        elif (out / model / "curve.csv").is_file():
            record["curve_tail"] = (out / model / "curve.csv").read_text().strip().splitlines()[-3:]
        check.say(f"run {model}: {record.get('summary') or record['exit_status']}")
        check.save()


def summary(rec: dict) -> dict:
    """The headline numbers of a run's results record (MoPoE-VAE's judges when present)."""
    judge = "mopoe" if "mopoe" in rec.get("metrics", {}) else "ours"
    m = rec.get("metrics", {}).get(judge)
    if not m:
        return {}
    out = {"judge": judge, "conditional_coherence": m["conditional_coherence"]["mean"],
           "by_given": m["conditional_coherence"]["by_size"], "unconditional_coherence": m["unconditional_coherence"],
           "ssim": m["ssim"]["mean"]}
    if "joint" in rec.get("likelihood", {}):
        out["log_px"] = rec["likelihood"]["joint"]["mean"]
    if rec.get("latent_sampler"):
        out["unconditional_latent_mixture"] = rec["latent_sampler"]["unconditional_coherence"].get(judge)
    return out


def markdown(report: dict) -> str:
    lines = [f"# GPU check {report['tag']}", "", f"`{report['command']}`; {report.get('elapsed_s')} s of "
             f"{report['deadline_s']} s.", ""]
    env = report.get("environment")
    if env:
        lines += [f"Device: {env['device']['name']} ({env.get('nvidia_smi', 'no nvidia-smi')}); "
                  f"versions {json.dumps(env['versions'])}.", ""]
    configs = report["phases"].get("timings", {}).get("configs", [])
    if configs:
        lines += ["| model | batch | lr | compile | first steps (s) | ms / step (median) | IQR | 150 epochs (min) "
                  "| graphs / breaks | peak GiB | note |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for c in configs:
            ms = c.get("ms_median")
            epochs = f"{ms * math.ceil(60000 / c['batch']) * 150 / 6e4:.1f}" if ms else ""
            lines.append(f"| {c['model']} | {c['batch']} | {c['lr']:.2e} | {c['compile']} | {c.get('first_steps_s', '')} "
                         f"| {ms or ''} | {c.get('ms_q1', '')}-{c.get('ms_q3', '')} | {epochs} "
                         f"| {c.get('graphs', '')} / {c.get('graph_breaks', '')} | {c.get('peak_gib', '')} "
                         f"| {c.get('error') or c.get('skipped') or ''} |")
        lines += ["", "150 epochs: the median step times ceil(60,000 / batch) steps per epoch, training steps "
                  "only (no evaluations).", ""]
    runs_ = report["phases"].get("runs", {})
    if runs_:
        lines += ["| run | compile | batch | budget (min) | steps | ms / step | cond. coherence | 1 / 2 / 3 / 4 given "
                  "| uncond. (prior) | uncond. (latent mixture) | SSIM | log p(x) | note |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for model, r in runs_.items():
            t, s = r.get("training") or {}, r.get("summary") or {}
            fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else ""  # noqa: E731
            given = " / ".join(f"{v:.3f}" for v in (s.get("by_given") or {}).values())
            note = r.get("skipped") or ("" if r.get("exit_status") == 0 else f"exit {r.get('exit_status')}")
            lines.append(f"| {model} | {r.get('compile')} | {r.get('batch')} | {r.get('minutes', '')} | {t.get('steps', '')} "
                         f"| {t.get('ms_per_step', '')} | {fmt(s.get('conditional_coherence'))} | {given} "
                         f"| {fmt(s.get('unconditional_coherence'))} | {fmt(s.get('unconditional_latent_mixture'))} "
                         f"| {fmt(s.get('ssim'))} | {s.get('log_px', '') and round(s['log_px'])} | {note} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", default=str(ROOT / "docs" / "results"), help="where the files go")
    p.add_argument("--tag", default=None, help="file-name tag (default: the date and the GPU's name)")
    p.add_argument("--deadline", type=float, default=540.0, help="seconds for everything (hard limit)")
    p.add_argument("--work", default="/tmp/gpu_check", help="data, runs and scratch files")
    p.add_argument("--data-root", default=None, help="MNIST and backgrounds (default: shared/data, ../shared/data)")
    p.add_argument("--phases", nargs="+", default=["timings", "runs"], choices=["timings", "runs"])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS, help="models timed eagerly")
    p.add_argument("--compile-models", nargs="+", default=["gmrf", "mmvaeplus"], choices=MODELS)
    p.add_argument("--compile-modes", nargs="+", default=["default"],
                   help="torch.compile modes timed (pyro_mcvae.nets.compiled.COMPILE_MODES)")
    p.add_argument("--batches", nargs="*", type=int, default=[512],
                   help="larger batches timed for the first of --compile-models, eager and compiled")
    p.add_argument("--warmup", type=int, default=10, help="steps before the timed ones (eager; +3 compiled)")
    p.add_argument("--steps", type=int, default=40, help="timed steps per configuration")
    p.add_argument("--run-reserve", type=float, default=300.0, help="seconds the timings leave to the runs")
    p.add_argument("--run-models", nargs="*", default=["gmrf", "mmvaeplus"], choices=MODELS)
    p.add_argument("--run-share", type=float, default=0.6, help="share of the training time of the first run")
    p.add_argument("--run-compile", default="best",
                   help="compile mode of the runs ('best': the one the timings give most steps in the budget)")
    p.add_argument("--run-batch", type=int, default=BASE_BATCH, help="batch of the runs (lr by the square-root rule)")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny generated data, a few steps")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--until", type=float, help=argparse.SUPPRESS)
    p.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.data_root is None:
        local = ROOT / "shared" / "data"
        args.data_root = str(local if local.is_dir() else ROOT.parent / "shared" / "data")
    if args.dry_run:
        args.run_batch = 32
    return args


def main(argv=None) -> int:
    args = parse(argv)
    if args.worker:
        time_configs(json.loads(args.worker), args.data, args.until, Path(args.worker_out), args.dry_run)
        return 0
    check = Check(args)
    check.say(f"tag {check.tag}, results in {check.results}, deadline {args.deadline:.0f} s")
    check.report["environment"] = environment(check)
    if not args.dry_run and check.report["environment"]["device"]["type"] != "cuda":
        check.say("no CUDA device: nothing to check (use --dry-run on a CPU)")
        check.save()
        return 2
    t0 = time.monotonic()
    data_dir = make_data(check)
    check.report["phases"]["data"] = {"seconds": round(time.monotonic() - t0, 1), "dir": data_dir}
    check.say(f"data in {data_dir} ({check.report['phases']['data']['seconds']} s)")
    check.save()
    if "timings" in args.phases:
        timings(check, data_dir)
    if "runs" in args.phases:
        runs(check, data_dir)
    check.save()
    check.say(f"done: {check.results / f'gpu_check_{check.tag}.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
