"""``python -m pyro_mcvae.data.polymnist``: see :mod:`.cli`."""

from .cli import main

main()
