"""``python -m pyro_mcvae.data.bikes``: see :mod:`.cli`."""

from .cli import main

main()
