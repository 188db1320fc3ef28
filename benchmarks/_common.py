"""Helpers shared by the benchmark scripts in this folder.

The scripts are run as ``python benchmarks/NAME.py``, which puts this folder on ``sys.path``, so
they import this module as ``_common``. It holds the command-line options every script takes, the
interleaved timer, the machine description printed and stored with the numbers, the markdown and
JSON output, and the copula minibatches of the two training benchmarks.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import shlex
import sys
import time

import numpy as np
import pyro
import torch

from pyro_mcvae.data.copula import make_copula_splits
from pyro_mcvae.infer.train import seed_everything
from pyro_mcvae.infer.trainer import resolve_device as library_resolve_device

# The model sizes of the training benchmarks (step_time, pyro_overhead).
# name: (component size D, latent size d, hidden layers); M = 4 components, batch 256.
CONFIGS = {
    "copula": dict(dim=2, latent=2, hidden=(64, 64)),
    "large": dict(dim=64, latent=16, hidden=(256, 256)),
}
NUM_COMPONENTS = 4
BATCH = 256
NUM_BATCHES = 8  # distinct minibatches cycled through by every alternative


# -- command line and set-up -------------------------------------------------------------------
def make_parser(doc: str) -> argparse.ArgumentParser:
    """Parser with the options every benchmark takes (a script adds its own after them)."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small smoke-test run (< 20 s)")
    p.add_argument("--json", metavar="PATH", help="write the numbers and the environment here")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="call torch.set_num_threads(N) first (default: leave torch's default)")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions per alternative")
    return p


def parse_cpu_benchmark(doc: str, argv, reason: str):
    """The common options parsed and set up, for a benchmark that measures the CPU only:
    ``(args, device, default_threads)``; exits with ``reason`` on another device."""
    args = make_parser(doc).parse_args(argv)
    return (args, *setup_cpu(args, reason))


def setup_cpu(args, reason: str) -> tuple[torch.device, int]:
    """:func:`setup` for a benchmark that measures the CPU only (its own options parsed): exits
    with ``reason`` on another device."""
    device, default_threads = setup(args)
    if device.type != "cpu":
        raise SystemExit(f"{reason}; run it with --device cpu")
    return device, default_threads


def resolve_device(name: str) -> torch.device:
    """The library's device resolution, ending the script with its message on a bad name."""
    try:
        return library_resolve_device(name)
    except ValueError as err:
        sys.exit(f"error: --device {name}: {err}")


def setup(args) -> tuple[torch.device, int]:
    """Device, thread count (``--threads``) and seeds; returns the device and torch's default
    thread count."""
    device = resolve_device(args.device)
    default_threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    return device, default_threads


def print_header(benchmark: str, args, device, default_threads: int, extra: str = "",
                 load_note: str = "") -> dict:
    """Print what ran where, and return :func:`machine_info` for the JSON output."""
    info = machine_info(device)
    info["torch_default_num_threads"] = default_threads
    threads_note = (f"set by --threads; default {default_threads}" if args.threads
                    else "left at default")
    print(f"# benchmark: {benchmark}")
    print(f"torch {info['torch']}, pyro {info['pyro']}, device {device} ({info.get('gpu', info['cpu'])}), "
          f"torch.get_num_threads() = {info['torch_num_threads']} "
          f"({threads_note}), seed {args.seed}, "
          f"pyro validation {'on' if info['pyro_validation'] else 'off'} by default{extra}")
    if "loadavg_start" in info:
        note = load_note.format(cpu_count=info["cpu_count"])
        print(f"load average at start: {', '.join(f'{v:.2f}' for v in info['loadavg_start'])}{note}")
    return info


# -- timing --------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def quartiles(values) -> tuple[float, float, float]:
    q1, med, q3 = np.percentile(np.asarray(values, dtype=float), [25, 50, 75])
    return float(q1), float(med), float(q3)


def step_summary(times: dict, names) -> dict:
    """Milliseconds per call of each of ``names`` (median and quartiles of ``times[name]``, in
    seconds) and the ratio of its median to that of ``names[0]``."""
    base = float(np.median(times[names[0]]))
    summary = {}
    for name in names:
        q1, med, q3 = quartiles(times[name])
        summary[name] = {"ms_median": med * 1e3, "ms_q1": q1 * 1e3, "ms_q3": q3 * 1e3, "ratio": med / base}
    return summary


def interleaved(alternatives: dict, reps: int, inner: int, warmup: int, device) -> dict:
    """Per-repetition seconds per call of each alternative.

    ``alternatives`` maps a name to ``(context, fn)``: ``context()`` returns a context manager
    entered around each timed block (not timed), ``fn()`` is one call. Every alternative is warmed
    up first; then each repetition runs every alternative ``inner`` times, in an order rotated by
    one each repetition so that no alternative always runs first.
    """
    names = list(alternatives)
    for name in names:
        ctx, fn = alternatives[name]
        with ctx():
            for _ in range(warmup):
                fn()
        sync(device)
    times = {name: [] for name in names}
    for r in range(reps):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            ctx, fn = alternatives[name]
            gc.collect()
            with ctx():
                sync(device)
                start = time.perf_counter()
                for _ in range(inner):
                    fn()
                sync(device)
                times[name].append((time.perf_counter() - start) / inner)
    return times


@contextlib.contextmanager
def validation(flag: bool):
    """Pyro's (and torch's) distribution-argument validation set to ``flag`` inside the block."""
    old = pyro.infer.util.is_validation_enabled()
    pyro.enable_validation(flag)
    try:
        yield
    finally:
        pyro.enable_validation(old)


# -- environment and output ----------------------------------------------------------------
def machine_info(device: torch.device) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "device": str(device),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "pyro_validation": bool(pyro.infer.util.is_validation_enabled()),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    if hasattr(os, "getloadavg"):
        info["loadavg_start"] = list(os.getloadavg())
    return info


def markdown_table(headers, rows) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path, benchmark: str, args, info, results) -> None:
    if hasattr(os, "getloadavg"):
        info["loadavg_end"] = list(os.getloadavg())
    payload = {
        "benchmark": benchmark,
        "command": shlex.join([sys.executable, *sys.argv]),
        "seed": args.seed,
        "quick": args.quick,
        **info,
        "results": results,
    }
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)
    print(f"\nwrote {path}")


# -- data of the training benchmarks ---------------------------------------------------------
def make_batches(cfg: dict, seed: int, device) -> list[torch.Tensor]:
    """``NUM_BATCHES`` copula minibatches ``(BATCH, M, D)`` in [0, 1] for the config ``cfg``."""
    data = make_copula_splits(
        n_train=BATCH * NUM_BATCHES, n_test=16, seed=seed,
        num_components=NUM_COMPONENTS, num_coordinates=cfg["dim"],
    ).train
    return list(torch.from_numpy(data).to(device).split(BATCH))


def polymnist_run_parser(doc: str, tuples: int, tuples_help: str) -> argparse.ArgumentParser:
    """The options of the scripts that examine a finished run of ``examples/polymnist.py``:
    ``--run`` (its ``<out>/<model>`` folder), ``--data-dir``, ``--judges`` (MoPoE-VAE's
    classifiers; both default to the folders beside this checkout), ``--tuples``, ``--seed``,
    ``--json``."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--run", required=True, help="a model folder of examples/polymnist.py (<out>/<model>)")
    p.add_argument("--data-dir", default=os.path.join(root, "..", "data", "polymnist"))
    p.add_argument("--judges", default=os.path.join(root, "..", "shared", "data", "polymnist", "mopoe_classifiers"))
    p.add_argument("--tuples", type=int, default=tuples, help=tuples_help)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the numbers here")
    return p


def check_polymnist_dirs(args) -> None:
    """Exit with one line when ``--data-dir`` or ``--judges`` is not a directory."""
    for path, what in ((args.data_dir, "--data-dir"), (args.judges, "--judges")):
        if not os.path.isdir(path):
            sys.exit(f"{what} {path} is not a directory")


def random_images(shape, seed: int) -> torch.Tensor:
    """Seeded random 8-bit images as floats in [0, 1], shape ``shape`` (the image benchmarks'
    stand-in for PolyMNIST tuples: the step's cost does not depend on the pixels)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, tuple(shape), generator=gen, dtype=torch.uint8).float().div(255)


def image_step_sizes(args, reps: int) -> tuple[int, tuple[int, int], int]:
    """``(batch, MLP hidden sizes, repetitions)`` of the CPU image-step benchmarks: the ``cpu``
    preset's 128 and (512, 512) (``--quick``: 8 and (32, 32)), ``--batch`` and ``--reps`` when given
    (``reps`` the default; 2 quick)."""
    batch = args.batch or (8 if args.quick else 128)
    hidden = (32, 32) if args.quick else (512, 512)
    return batch, hidden, args.reps or (2 if args.quick else reps)

