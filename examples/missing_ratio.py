"""Quality against the fraction of missing components in the training data.

    python examples/missing_ratio.py                                  # copula, GMRF, ratios 0 0.25 0.5
    python examples/missing_ratio.py --model all --seeds 2 --out results/missing-copula
    python examples/missing_ratio.py --experiment nongaussian --kind x --model gmrf

Runs the vector benchmark once per ratio (``--ratios``; each in ``OUT/ratio<R>``, resumable: the
same command reuses finished runs) with ``--missing-ratio R`` (each component of each training
tuple absent with that probability, never all of them; the test tuples stay complete), then
writes ``OUT/table.md`` (joint W1 unconditional and conditional, joint and conditional
log-likelihoods, per model and ratio) and ``OUT/missing_ratio.png``. Every other option is the
benchmark's own (``python examples/copula.py -h``).
"""

import argparse
import sys
from pathlib import Path

from pyro_mcvae.experiments import get_experiment, parse_config, run_experiment
from pyro_mcvae.experiments.copula import missing_ratio_summary
from pyro_mcvae.plots import save_figure


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     add_help=False)
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.0, 0.25, 0.5])
    parser.add_argument("--experiment", default="copula", choices=["copula", "nongaussian"])
    parser.add_argument("--out", default="results/missing-ratio")
    args, rest = parser.parse_known_args(argv)
    if "-h" in rest or "--help" in rest:
        parser.print_help()
        return 0
    experiment = get_experiment(args.experiment)
    out = Path(args.out)
    by_ratio, floor = {}, None
    for ratio in args.ratios:
        config = parse_config(experiment, [*rest, "--missing-ratio", str(ratio), "--out", str(out / f"ratio{ratio:g}")],
                              prog="missing_ratio.py")
        try:
            record = run_experiment(experiment, config)
        except (ValueError, FileNotFoundError) as err:
            print(f"missing_ratio.py: error: {err}", file=sys.stderr)
            return 2
        by_ratio[ratio] = record["_results"]
        floor = record["noise_floor"]["joint_w1_mean"]
    table, fig = missing_ratio_summary(by_ratio, floor)
    (out / "table.md").write_text(table)
    print(table)
    print(f"wrote {out / 'table.md'} and {save_figure(fig, out / 'missing_ratio.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
