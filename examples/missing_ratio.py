"""Quality against the fraction of missing components in the training data.

    python examples/missing_ratio.py                                  # copula, GMRF, ratios 0 0.25 0.5
    python examples/missing_ratio.py --model all --seeds 2 --out results/missing-copula
    python examples/missing_ratio.py --experiment nongaussian --kind x --model gmrf
    python examples/missing_ratio.py --experiment polymnist --model gmrf mmvae --epochs 3 --minutes 0 \
        --curve-every 0 --num-eval 2000 --likelihood-tuples 100 --fid off --subset-posteriors 0 \
        --out results/polymnist-missing
    python examples/missing_ratio.py --experiment polymnist --out results/polymnist-missing --tables-only

Runs the benchmark once per ratio (``--ratios``; each in ``OUT/ratio<R>``, resumable: the same
command reuses finished training runs) with ``--missing-ratio R`` (each component of each
training tuple absent with that probability, never all of them; the test tuples stay complete),
then writes ``OUT/table.md`` and ``OUT/missing_ratio.png``: for the vector benchmarks joint W1
(unconditional and conditional) and log-likelihoods, for PolyMNIST coherence and
log-likelihoods, per model and ratio. ``--tables-only`` reads the finished runs'
``results.json`` instead of running them. Every other option is the benchmark's own (``python
examples/copula.py -h``, ``python examples/polymnist.py -h``).
"""

import argparse
import json
import sys
from pathlib import Path

from pyro_mcvae.experiments import get_experiment, parse_config, run_experiment
from pyro_mcvae.plots import save_figure


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     add_help=False)
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.0, 0.25, 0.5])
    parser.add_argument("--experiment", default="copula", choices=["copula", "nongaussian", "polymnist"])
    parser.add_argument("--out", default="results/missing-ratio")
    parser.add_argument("--tables-only", action="store_true",
                        help="read OUT/ratio<R>/results.json of finished runs instead of running them")
    args, rest = parser.parse_known_args(argv)
    if "-h" in rest or "--help" in rest:
        parser.print_help()
        return 0
    experiment = get_experiment(args.experiment)
    out = Path(args.out)
    by_ratio, record = {}, None
    for ratio in args.ratios:
        folder = out / f"ratio{ratio:g}"
        try:
            if args.tables_only:
                if not (folder / "results.json").is_file():
                    raise FileNotFoundError(f"no finished run in {folder} (results.json); run without --tables-only")
                record = json.loads((folder / "results.json").read_text())
            else:
                config = parse_config(experiment, [*rest, "--missing-ratio", str(ratio), "--out", str(folder)],
                                      prog="missing_ratio.py")
                record = run_experiment(experiment, config)
        except (ValueError, FileNotFoundError) as err:
            print(f"missing_ratio.py: error: {err}", file=sys.stderr)
            return 2
        by_ratio[ratio] = experiment.results_of(record)
    table, fig = experiment.missing_ratio_summary(by_ratio, record)
    (out / "table.md").write_text(table)
    print(table)
    print(f"wrote {out / 'table.md'} and {save_figure(fig, out / 'missing_ratio.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
