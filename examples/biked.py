"""Structural coherence on bicycle assemblies: GMRF MCVAE against the baselines.

    python examples/biked.py                      # GMRF and every baseline, procedural bikes
    python examples/biked.py --quick              # small CPU run
    python examples/biked.py --data-dir BIKED/    # real BIKED-style folders (one per component)

The same as ``pyro-mcvae run bikes``. Five components (saddle, frame, crank, wheels, handlebars),
64x64 grayscale in a common frame. Writes ``table.md`` (like the paper's Table III: Wasserstein
between the joint laws of the components' centres of mass, SSIM per component and of the overlaid
bike, assembly validity where the geometry is known), ``results.json`` and ``figure.png`` (like
its Figure 4) under ``--out``. ``--save-samples N`` also writes ``<out>/<model>/samples.pt``
(generated assemblies, unconditional and from each single component; see ``save_bike_samples``).
Training resumes from the checkpoint in ``<out>/<model>/train`` (``--restart`` starts again).
"""

import sys

from pyro_mcvae.experiments import command_line, get_experiment

if __name__ == "__main__":
    sys.exit(command_line(get_experiment("bikes"), description=__doc__))
