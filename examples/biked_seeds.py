"""Assemblies over seeds: one table of every model's metrics, mean ± standard deviation.

    python examples/biked_seeds.py results/biked-cpu-v2-seed0 results/biked-cpu-v2-seed1 \
        results/biked-cpu-v2-seed2 --out results/biked-cpu-v2-seeds.md

Each folder is the ``--out`` of ``examples/biked.py`` runs of one seed (each model's
``<model>/results.json``, so models added by later commands count); a model enters where every
folder has it. Also writes the summary as JSON beside ``--out``, and says for
every metric whether the GMRF is best beyond the seed spread (its mean ± sd apart from the best
other model's).
"""

import argparse
import json
import sys
from pathlib import Path

from pyro_mcvae.experiments.bikes import seed_summary, seed_table


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="output folders of examples/biked.py, one per seed")
    p.add_argument("--out", help="write the markdown table there (and the summary as .json beside it)")
    args = p.parse_args(argv)
    records = []
    for folder in args.runs:
        # Each model's own record (<folder>/<model>/results.json), so that models trained into the
        # same folder by separate commands all count; the folder's combined file where that is all.
        per_model = {path.parent.name: json.loads(path.read_text())
                     for path in sorted(Path(folder).glob("*/results.json"))}
        combined = Path(folder) / "results.json"
        if not per_model and not combined.is_file():
            p.error(f"no results.json in {folder} (has examples/biked.py finished there?)")
        records.append(per_model or json.loads(combined.read_text()))
    try:
        summary = seed_summary(records)
    except ValueError as err:
        p.error(str(err))
    summary["runs"] = [str(f) for f in args.runs]
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
