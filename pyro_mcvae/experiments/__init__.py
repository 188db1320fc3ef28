"""End-to-end experiments (data, model, training, evaluation, results files) behind the examples
and the ``pyro-mcvae`` command line."""
