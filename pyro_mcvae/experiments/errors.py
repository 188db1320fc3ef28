"""How the command-line fronts end: a user error, or Ctrl-C, is one line on stderr and exit status
2, never a traceback. ``pyro-mcvae`` (every subcommand) and the examples (through
:func:`~pyro_mcvae.experiments.runner.command_line`) run their work through :func:`run_command`
and parse their options with :class:`OneLineParser`.

User errors are what the library raises for bad input: ``ValueError`` (bad settings, data, a run
of other settings in the output directory), ``OSError`` (missing files and directories, a
directory that cannot be written) and an unavailable Inception network. Other exceptions are
bugs and keep their traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

__all__ = ["OneLineParser", "interrupt_message", "run_command"]


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line, ``"<prog>: error: <what> (<prog> -h: the
    options)"``, and exit status 2, instead of the usage text followed by the error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} ({self.prog} -h: the options)\n")


def _user_errors() -> tuple[type[BaseException], ...]:
    from ..metrics.fid import InceptionWeightsUnavailable

    return ValueError, OSError, InceptionWeightsUnavailable


def interrupt_message(err: KeyboardInterrupt) -> str:
    """What a Ctrl-C tells the user: where the interrupted training saved its checkpoint (the
    :class:`~pyro_mcvae.infer.callbacks.Checkpoint` callback records it on the exception) and
    that the same command resumes from it, or that none was saved."""
    from ..infer.callbacks import saved_checkpoint

    path = saved_checkpoint(err)
    if path is not None:
        return f"interrupted; the run so far is saved in {path}: the same command resumes it"
    return ("interrupted before a checkpoint was saved in this process: the same command starts again "
            "(runs already saved in the output directory are resumed or reused)")


def run_command(command: Callable[[], object], prog: str) -> int:
    """``command()``'s exit status (an ``int`` it returns; anything else: 0); a user error or
    Ctrl-C prints one line, ``"<prog>: error: <what>"`` (the first line of the message: Pyro
    appends its trace to errors raised inside a program), and returns 2."""
    try:
        status = command()
        return status if isinstance(status, int) and not isinstance(status, bool) else 0
    except KeyboardInterrupt as err:
        print(f"{prog}: {interrupt_message(err)}", file=sys.stderr)
        return 2
    except _user_errors() as err:
        text = str(err).strip().splitlines()
        print(f"{prog}: error: {text[0] if text else type(err).__name__}", file=sys.stderr)
        return 2
