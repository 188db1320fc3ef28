"""Assemblies over seeds: one table of every model's metrics, mean ± standard deviation.

    python examples/biked_seeds.py results/biked-cpu-v2-seed0 results/biked-cpu-v2-seed1 \\
        results/biked-cpu-v2-seed2 --out results/biked-cpu-v2-seeds.md

Each source is an ``--out`` folder of ``examples/biked.py`` (each model's ``<model>/results.json``,
so models added by later commands count, or the folder's combined ``results.json``) or a results
file itself (one record, or ``{model: record}``). Records are grouped by their own seed, and runs
of a model whose settings differ from its preset (``--beta``, ``--prior-form``, ...) form rows of
their own, named by the differences; a row enters where every seed has it. Also writes the summary
as JSON beside ``--out``, and says for every metric whether the GMRF is best beyond the seed
spread (its mean ± sd apart from the best other model's).
"""

import argparse
import json
import sys
from pathlib import Path

from pyro_mcvae.experiments.bikes import runs_by_seed, seed_summary, seed_table


def read_records(source: Path) -> list[dict]:
    """Every model record in one folder or results file."""
    if source.is_dir():
        files = sorted(source.glob("*/results.json")) or [source / "results.json"]
        if not files[0].is_file():
            raise ValueError(f"no results.json in {source} (has examples/biked.py finished there?)")
    elif source.is_file():
        files = [source]
    else:
        raise ValueError(f"{source} does not exist")
    records = []
    for path in files:
        data = json.loads(path.read_text())
        records += [data] if "settings" in data else [r for m, r in data.items() if not m.startswith("_")]
    return records


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="+", help="output folders or results files of examples/biked.py")
    p.add_argument("--out", help="write the markdown table there (and the summary as .json beside it)")
    args = p.parse_args(argv)
    try:
        records = [r for source in args.sources for r in read_records(Path(source))]
        summary = seed_summary(runs_by_seed(records))
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


if __name__ == "__main__":
    sys.exit(main())
