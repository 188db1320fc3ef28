"""PolyMNIST: train a multimodal VAE on five image modalities and score its coherence.

    python examples/polymnist.py                       # GMRF MCVAE, paper settings on a GPU;
                                                       # the quick CPU run when there is none
    python examples/polymnist.py --quick               # small CPU run (minutes)
    python examples/polymnist.py --model mmvaeplus --epochs 50 --device cuda
    python examples/polymnist.py --model all --quick   # every model, one table
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
