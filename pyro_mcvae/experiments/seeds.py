"""Results over seeds: a benchmark's metrics as mean ± standard deviation per model, and whether
the reference model (the GMRF) is best beyond the seed spread.

A benchmark supplies its :class:`Metric` list and a :class:`Variants` that tells its runs apart:
a record whose settings differ from what its preset gives its model (``--beta 0.001``,
``--prior-form paper``, ...) is a row of its own, named by the differences, so that one folder of
results may hold a beta grid beside the preset's runs. Records are grouped by their own
``settings["seed"]``, whatever folder they come from. Used by ``examples/biked_seeds.py`` and
``examples/polymnist_seeds.py`` through :func:`seeds_main`.

Reading of "beyond the seed spread": the reference's mean is better than the best rival's by more
than the two sample standard deviations added (the mean ± sd intervals do not overlap).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["Metric", "Variants", "runs_by_seed", "seed_summary", "seed_table", "read_records", "seeds_main"]


@dataclass(frozen=True)
class Metric:
    """One column: ``value`` reads it from a model's record (``KeyError``/``TypeError`` where the
    record lacks it: that row reads n/a, and a column no row has is left out)."""

    label: str
    value: Callable[[dict], float]
    lower_is_better: bool
    digits: int = 3


def _same(a, b) -> bool:
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return a == b


@dataclass(frozen=True)
class Variants:
    """How runs of one model are told apart.

    ``defaults(settings)``: the settings a run of the same model and preset records when given no
    options; ``relevant(settings)``: the names of the settings that change what is measured (not
    the output folder, say); ``legacy``: the values that records written before a setting existed
    ran at."""

    defaults: Callable[[dict], dict]
    relevant: Callable[[dict], Sequence[str]]
    legacy: dict = field(default_factory=dict)

    def label(self, record: dict) -> str:
        """The model's name, or the name with the settings that differ from its preset's, e.g.
        ``gmrf (beta 0.001, prior_form paper, subset_posteriors 0)``."""
        settings = {**self.legacy, **record["settings"]}
        defaults = {**self.legacy, **self.defaults(settings)}
        diffs = [f"{name} {settings.get(name)}" for name in self.relevant(settings)
                 if not _same(settings.get(name), defaults.get(name))]
        return f"{settings['model']} ({', '.join(diffs)})" if diffs else settings["model"]


def runs_by_seed(records: list[dict], variants: Variants) -> list[dict]:
    """Records (any order, from any folders) as one ``{label: record}`` per seed, by each record's
    own ``settings["seed"]`` and ``variants.label``, seeds in increasing order. Two records with
    one label and seed are an error (which one would count?)."""
    seeds: dict[int, dict] = {}
    for record in records:
        try:
            seed = int(record["settings"]["seed"])
        except (KeyError, TypeError, ValueError):
            raise ValueError("a record without settings['seed'] (not a results.json of an example?)") from None
        label = variants.label(record)
        if label in seeds.setdefault(seed, {}):
            raise ValueError(f"two records of {label!r} for seed {seed}: "
                             f"{seeds[seed][label].get('command')!r} and {record.get('command')!r}")
        seeds[seed][label] = record
    return [seeds[k] for k in sorted(seeds)]


def _base(label: str) -> str:
    return label.split(" (")[0]


def seed_summary(runs: list[dict], metrics: Sequence[Metric], reference: str = "gmrf") -> dict:
    """Every metric over seeds. ``runs``: one ``{label: record}`` per seed (:func:`runs_by_seed`);
    a row enters where every seed has it, the reference's variants first.

    Per metric: ``models`` ``{label: {"values", "mean", "sd"}}`` (``sd``: the sample standard
    deviation over seeds, 0 for one seed; a row whose records lack the metric is left out of
    it, a metric no row has is left out), ``best`` (by the mean), and ``verdicts``: for every
    variant of ``reference`` (labels ``reference`` or ``reference (...)``) against the best other
    model (variants of ``reference`` are not its rivals): ``best_other``, ``seeds_won`` (seeds in
    which it beats every rival of the same seed), ``margin`` (its mean's advantage, negative where
    it is behind) and ``separated`` (``margin`` larger than the two standard deviations added;
    never with one seed, which has no spread)."""
    if not runs:
        raise ValueError("no runs to summarise")
    models = sorted((m for m in runs[0] if not m.startswith("_") and all(m in run for run in runs)),
                    key=lambda m: (_base(m) != reference, m))
    if not models:
        raise ValueError("no model is in every run")
    out = {"seeds": len(runs), "models": models, "metrics": {}}
    for metric in metrics:
        table = {}
        for m in models:
            try:
                table[m] = [float(metric.value(run[m])) for run in runs]
            except (KeyError, TypeError):  # an older record, no validity on real BIKED folders, no FID weights
                continue
        if not table:
            continue
        sign = 1.0 if metric.lower_is_better else -1.0
        stats = {m: {"values": v, "mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0}
                 for m, v in table.items()}
        entry = {"lower_is_better": metric.lower_is_better, "digits": metric.digits, "models": stats,
                 "best": min(stats, key=lambda m: sign * stats[m]["mean"]), "verdicts": {}}
        rivals = [m for m in stats if _base(m) != reference]
        for ref in (m for m in stats if _base(m) == reference):
            if not rivals:
                break
            rival = min(rivals, key=lambda m: sign * stats[m]["mean"])
            margin = sign * (stats[rival]["mean"] - stats[ref]["mean"])
            won = sum(all(sign * table[ref][i] < sign * table[m][i] for m in rivals) for i in range(len(runs)))
            spread = stats[ref]["sd"] + stats[rival]["sd"]
            entry["verdicts"][ref] = {"best_other": rival, "margin": margin, "seeds_won": won,
                                      "separated": bool(len(runs) > 1 and margin > spread)}
        out["metrics"][metric.label] = entry
    return out


def seed_table(summary: dict) -> str:
    """:func:`seed_summary` as markdown: mean ± sd per model and metric (the best mean in bold;
    ``n/a`` where a row lacks the metric),
    then one line per metric and variant of the reference on it against the best rival."""
    metrics = summary["metrics"]
    head = "| model | " + " | ".join(metrics) + " |\n|---|" + "---|" * len(metrics) + "\n"
    rows = []
    for m in summary["models"]:
        cells = []
        for entry in metrics.values():
            s, digits = entry["models"].get(m), entry["digits"]
            if s is None:
                cells.append("n/a")
                continue
            cell = f"{s['mean']:.{digits}f}" + (f" ± {s['sd']:.{digits}f}" if summary["seeds"] > 1 else "")
            cells.append(f"**{cell}**" if entry["best"] == m else cell)
        rows.append(f"| {m} | " + " | ".join(cells) + " |")
    one = summary["seeds"] == 1
    lines = ["One seed." if one else f"{summary['seeds']} seeds; mean ± sample standard deviation over seeds.",
             "", head + "\n".join(rows), ""]
    for label, entry in metrics.items():
        for name, ref in entry["verdicts"].items():
            verdict = ("best, beyond the seed spread" if ref["separated"] else
                       "not best" if ref["margin"] <= 0 else
                       "best (one seed: no spread to judge by)" if one else "best, within the seed spread")
            lines.append(f"- {label}: {name} {verdict} (margin {ref['margin']:+.4f} over {ref['best_other']}; "
                         f"best of all in {ref['seeds_won']} of {summary['seeds']} seeds)")
    return "\n".join(lines) + "\n"


def read_records(source: Path) -> list[dict]:
    """Every model record in an ``--out`` folder (each model's ``<model>/results.json``, so that
    models added by later commands count, else the folder's combined ``results.json``) or in a
    results file (one record, or ``{model: record}``)."""
    if source.is_dir():
        files = sorted(source.glob("*/results.json")) or [source / "results.json"]
        if not files[0].is_file():
            raise ValueError(f"no results.json in {source} (has the example finished there?)")
    elif source.is_file():
        files = [source]
    else:
        raise ValueError(f"{source} does not exist")
    records = []
    for path in files:
        data = json.loads(path.read_text())
        records += [data] if "settings" in data else [r for m, r in data.items() if not m.startswith("_")]
    return records


def seeds_main(argv, description: str, metrics: Sequence[Metric], variants: Variants) -> int:
    """The command line of the ``*_seeds.py`` examples: sources in, the table printed, and with
    ``--out`` written as markdown with the summary as JSON beside it."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="+", help="output folders or results files of the example")
    p.add_argument("--out", help="write the markdown table there (and the summary as .json beside it)")
    args = p.parse_args(argv)
    try:
        records = [r for source in args.sources for r in read_records(Path(source))]
        summary = seed_summary(runs_by_seed(records, variants), metrics)
    except ValueError as err:
        p.error(str(err))
    summary["sources"] = list(args.sources)
    table = seed_table(summary)
    print(table)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(table)
        out.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    return 0
