"""End-to-end experiments behind the examples and the ``pyro-mcvae`` command line: the
:class:`Experiment` interface and its registry (:mod:`.base`), one runner (:mod:`.runner`), and
one implementation per benchmark."""

from .base import (Experiment, ModelSpec, RunConfig, add_config_arguments, config_from_args, experiment_names,
                   get_experiment, parse_config, register_experiment)
from .runner import command_line, restore, run_experiment, train_or_resume

__all__ = ["Experiment", "ModelSpec", "RunConfig", "add_config_arguments", "config_from_args", "experiment_names",
           "command_line", "get_experiment", "parse_config", "register_experiment", "restore", "run_experiment", "train_or_resume"]
