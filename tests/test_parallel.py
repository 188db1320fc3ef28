"""Worker processes of map_in_processes: results in order, and no orphan after SIGTERM."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from pyro_mcvae.parallel import map_in_processes


def _square_and_pid(x):
    return x * x, os.getpid()


def test_results_in_task_order_and_in_workers():
    out = map_in_processes(_square_and_pid, [(i,) for i in range(5)], jobs=2)
    assert [v for v, _ in out] == [0, 1, 4, 9, 16]
    assert os.getpid() not in {pid for _, pid in out}


def test_one_job_runs_here():
    out = map_in_processes(_square_and_pid, [(3,), (4,)], jobs=1)
    assert out == [(9, os.getpid()), (16, os.getpid())]


def test_bad_jobs():
    with pytest.raises(ValueError, match="jobs"):
        map_in_processes(_square_and_pid, [(1,)], jobs=0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); read its state.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and SIGTERM")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_workers_die_with_the_parent(tmp_path, sig):
    """The parent is stopped while its workers sleep; every worker is gone soon after."""
    script = tmp_path / "parent.py"
    pids = tmp_path / "pids"
    pids.mkdir()
    script.write_text(textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {str(tmp_path)!r})
        from pyro_mcvae.parallel import map_in_processes
        from worker import sleep_forever
        if __name__ == "__main__":
            map_in_processes(sleep_forever, [({str(pids)!r},), ({str(pids)!r},)], jobs=2)
    """))
    (tmp_path / "worker.py").write_text(textwrap.dedent("""
        import os, time
        def sleep_forever(folder):
            open(os.path.join(folder, str(os.getpid())), "w").close()
            time.sleep(600)
    """))
    parent = subprocess.Popen([sys.executable, str(script)], start_new_session=True)
    try:
        deadline = time.time() + 60
        while len(os.listdir(pids)) < 2 and time.time() < deadline:
            time.sleep(0.1)
        workers = [int(p) for p in os.listdir(pids)]
        assert len(workers) == 2, "workers did not start"
        assert all(_alive(w) for w in workers)
        parent.send_signal(sig)
        parent.wait(timeout=30)
        deadline = time.time() + 15
        while any(_alive(w) for w in workers) and time.time() < deadline:
            time.sleep(0.1)
        assert not any(_alive(w) for w in workers), "a worker outlived its parent"
    finally:
        for w in [int(p) for p in os.listdir(pids)]:
            if _alive(w):
                os.kill(w, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()
