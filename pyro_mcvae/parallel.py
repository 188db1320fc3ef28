"""Independent runs in worker processes that never outlive the parent.

``ProcessPoolExecutor`` leaves its workers running when the parent is stopped by ``SIGTERM``
(only ``Ctrl-C`` reaches the whole process group), and an orphaned worker keeps a core busy for
the rest of its run. :func:`map_in_processes` stops its workers on every exit path: a normal
return, an exception, ``KeyboardInterrupt`` and ``SIGTERM`` (turned into ``KeyboardInterrupt``
while the pool runs); on Linux each worker also asks the kernel to send it ``SIGTERM`` when its
parent dies, which covers a ``SIGKILL`` of the parent.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
from typing import Callable, Sequence

__all__ = ["map_in_processes"]

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    """Worker initializer: SIGTERM when the parent exits (Linux), default SIGINT handling."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        except OSError:  # no libc under that name: the parent's handler still covers SIGTERM
            pass
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"stopped by signal {signum}")


def map_in_processes(fn: Callable, tasks: Sequence[tuple], jobs: int,
                     start_method: str = "spawn") -> list:
    """``[fn(*task) for task in tasks]`` computed ``jobs`` at a time in worker processes.

    Results come back in the order of ``tasks``. ``fn`` and the task arguments must be
    picklable (``fn`` defined at module level). With ``jobs == 1`` everything runs here.
    """
    tasks = [tuple(t) for t in tasks]
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if jobs == 1 or len(tasks) <= 1:
        return [fn(*t) for t in tasks]
    ctx = multiprocessing.get_context(start_method)
    on_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if on_main else None
    pool = ctx.Pool(min(jobs, len(tasks)), initializer=_die_with_parent, initargs=(os.getpid(),))
    try:
        results = pool.starmap(fn, tasks, chunksize=1)
        pool.close()
        pool.join()
        return results
    finally:
        pool.terminate()  # no-op after a clean close/join; kills the workers otherwise
        pool.join()
        if on_main:
            signal.signal(signal.SIGTERM, previous)
