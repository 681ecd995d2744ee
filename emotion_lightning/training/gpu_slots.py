"""GPUs for the jobs of a sweep that run at once on one machine (the parallel launcher with trainer=auto): each job
takes the GPU that the fewest running jobs hold and frees it when it ends, so a GPU whose job ended early takes the
next job instead of two jobs sharing another. A running job holds a lock file under the sweep dir
(`.gpu_slots/<machine>/gpu<k>.job<n>`); the system drops the lock if the job's process dies."""

import fcntl
import os
import socket
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

from emotion_lightning.data.atomic import exclusive

_held: dict = {}  # this process's running job: {"gpu": index, "lock": open lock file}


def running_jobs(folder: Path) -> Counter:
    """GPU index -> jobs holding it now; the lock files of jobs that ended are removed."""
    counts = Counter()
    for path in folder.glob("gpu*.job*"):
        try:
            probe = os.open(path, os.O_RDONLY)
        except FileNotFoundError:  # its job just ended
            continue
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            counts[int(path.name[3:].split(".")[0])] += 1
        else:
            path.unlink(missing_ok=True)
        finally:
            os.close(probe)
    return counts


def take_gpu(folder: Path, gpus: int, job: int):
    """(GPU index, its lock file) for job number `job`: the GPU of `gpus` that the fewest running jobs hold (the
    lowest index among equals). The lock is held until the file is closed."""
    with exclusive(folder / "choosing.lock"):  # one job chooses at a time
        counts = running_jobs(folder)
        gpu = min(range(gpus), key=lambda index: (counts[index], index))
        lock = open(folder / f"gpu{gpu}.job{job}", "a")
        fcntl.flock(lock, fcntl.LOCK_EX)
    return gpu, lock


def free_gpu(lock) -> None:
    Path(lock.name).unlink(missing_ok=True)
    lock.close()


def job_gpu(sweep_dir: str, gpus: int, job: int) -> int:
    """This job's GPU, taken from the sweep's pool on first use and held until the job ends (`releasing_gpu`)."""
    if not _held:
        folder = Path(sweep_dir) / ".gpu_slots" / socket.gethostname()
        _held["gpu"], _held["lock"] = take_gpu(folder, gpus, job)
    return _held["gpu"]


@contextmanager
def releasing_gpu():
    """Around one job of a command: the GPU it took from its sweep's pool is freed when it ends."""
    try:
        yield
    finally:
        if _held:
            free_gpu(_held.pop("lock"))
            _held.clear()
