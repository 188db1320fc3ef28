"""PolyMNIST over seeds and settings: one table of every run's metrics, mean ± standard deviation.

    python examples/polymnist_seeds.py results/polymnist-v2 results/polymnist-v2-beta1e-3 \
        results/polymnist-v2-seed1 --out results/polymnist-v2-table.md

Each source is an ``--out`` folder of ``examples/polymnist.py`` (each model's
``<model>/results.json``, or the folder's combined ``results.json``) or a results file itself.
Records are grouped by their own seed; runs whose settings differ from their preset's
(``--beta 0.001``, ``--subset-posteriors 0``, ...) form rows of their own, named by the
differences, so a beta grid and the preset's runs share one table; a row enters where every
seed has it (give one seed's sources for a one-seed table). Coherence and SSIM under MoPoE-VAE's
judges, the digit-feature Fréchet distance under ours, FID where it was computed. Also writes
the summary as JSON beside ``--out``, and says for every metric whether the GMRF is best beyond
the seed spread.
"""

import sys

from pyro_mcvae.experiments.polymnist import POLYMNIST_VARIANTS, SEED_METRICS
from pyro_mcvae.experiments.seeds import seeds_main

if __name__ == "__main__":
    sys.exit(seeds_main(None, __doc__, SEED_METRICS, POLYMNIST_VARIANTS))
