"""PolyMNIST: train a multimodal VAE on five image modalities and score its coherence.

    python examples/polymnist.py                       # GMRF MCVAE; without a GPU the cpu preset:
                                                       # MLPs, all 60,000 tuples, 22 min, coherence curve
    python examples/polymnist.py --model all --minutes 25   # every model, same budget, one table
    python examples/polymnist.py --preset gpu --model gmrf mmvaeplus   # the paper's ResNets, 15 min each (H100)
    python examples/polymnist.py --full                # the paper's protocol (150 epochs)
    python examples/polymnist.py --quick               # small smoke run (minutes)
    python examples/polymnist.py --full --classifiers-only   # our digit classifiers (3 epochs), saved
    torchrun --nproc_per_node=2 examples/polymnist.py --device cuda   # data-parallel (DDP)

The same as ``pyro-mcvae run polymnist``. Finds the data in ``--data-dir`` or generates it there
(MNIST IDX files from ``--mnist-dir`` and the backgrounds from ``--backgrounds-dir``, by default
from ``../shared/data`` or ``$PYRO_MCVAE_DATA``), trains (checkpoints in ``<out>/<model>/train``;
rerunning resumes), evaluates coherence (our classifiers and, when found, MoPoE-VAE's), SSIM, the
digit-feature Fréchet distance and FID (with ``--inception-weights``), and writes
``results.json``, ``table.md`` and image grids under ``--out``.
"""

import sys

from pyro_mcvae.experiments import command_line, get_experiment

if __name__ == "__main__":
    sys.exit(command_line(get_experiment("polymnist"), description=__doc__))
