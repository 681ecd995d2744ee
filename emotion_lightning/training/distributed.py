"""One job over several processes (DDP): which process writes the run's files, how Lightning's launcher starts the
other ranks of a job in a multirun, and how a failure on any rank fails the job.

Lightning's subprocess launcher starts ranks > 0 as `python -m <this command> <sys.argv[1:]>
hydra.run.dir=<Hydra's run dir>`: in a multirun job that would be `-m` and the whole sweep again, into another
folder. `ddp_job` gives them this job's own overrides and run dir instead, and clears the process group and the
launcher's environment after the job, so that the next job of the sweep starts its own ranks.
"""

import os
import sys
from contextlib import contextmanager

import torch
from lightning.fabric.plugins.environments import SLURMEnvironment

from emotion_lightning.data.errors import SettingError

# What Lightning's subprocess launcher sets in the launching process (read back by the next job's launcher).
LAUNCH_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def process_rank(num_nodes: int = 1) -> int:
    """This process's global rank in its DDP job (0 without one), numbered as Lightning numbers them, known before
    any Trainer exists: torchelastic's RANK, SLURM's task id, else NODE_RANK x processes per node + LOCAL_RANK
    (Lightning's own launcher; processes per node = WORLD_SIZE / num_nodes, as a multi-node launch sets them)."""
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    if SLURMEnvironment.detect():
        return int(os.environ["SLURM_PROCID"])
    per_node = max(1, int(os.environ.get("WORLD_SIZE") or num_nodes) // max(1, num_nodes))
    return int(os.environ.get("NODE_RANK") or 0) * per_node + local_rank()


def local_rank() -> int:
    """This process's rank on its machine (0 without DDP): LOCAL_RANK, or SLURM's SLURM_LOCALID for tasks SLURM
    started; it picks the machine's GPU."""
    if "LOCAL_RANK" in os.environ:
        return int(os.environ["LOCAL_RANK"])
    if SLURMEnvironment.detect():
        return int(os.environ.get("SLURM_LOCALID") or 0)
    return 0


def rank_zero() -> bool:
    """Whether this process writes the run's files (also true without DDP)."""
    return process_rank() == 0


@contextmanager
def ddp_job():
    """Around one job of a command: in a multirun, Lightning's launcher starts this job's ranks as a single run
    of its own overrides in its own run dir; afterwards the launcher's process group and variables are cleared."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict, read_write

    launching = "LOCAL_RANK" not in os.environ  # not a rank started by a launcher (or by SLURM with several tasks)
    saved_argv, saved_env = sys.argv[:], {name: os.environ.get(name) for name in LAUNCH_VARIABLES}
    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    saved_run_dir = hydra.run.dir if hydra is not None else None
    if launching and hydra is not None and hydra.mode == RunMode.MULTIRUN:
        sys.argv = [sys.argv[0], *hydra.overrides.task]  # this job alone: no -m, no sweep lists
        with read_write(hydra), open_dict(hydra):
            hydra.run.dir = hydra.runtime.output_dir
    try:
        yield
    finally:
        if launching:
            sys.argv = saved_argv
            if hydra is not None:
                with read_write(hydra), open_dict(hydra):
                    hydra.run.dir = saved_run_dir
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
            for name, value in saved_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def launched_ranks(trainer) -> list:
    """The processes Lightning's subprocess launcher started for ranks > 0 (none without one)."""
    return list(getattr(trainer.strategy.launcher, "procs", None) or [])


def check_can_launch(trainer) -> None:
    """Refuse a subprocess-launched DDP job where its ranks could not be started as this command: inside a worker
    of the parallel (joblib) launcher, the launched ranks would run the worker's module, not this command."""
    import __main__

    launcher = trainer.strategy.launcher
    module = getattr(getattr(__main__, "__spec__", None), "name", None) or ""
    subprocess_launched = type(launcher).__name__ == "_SubprocessScriptLauncher" and \
        not launcher.cluster_environment.creates_processes_externally
    if subprocess_launched and module and not module.startswith("emotion_lightning"):
        raise SettingError(
            f"trainer.strategy={trainer.strategy.strategy_name} starts its other ranks by running this command again, "
            f"which a worker of {module.split('.')[0]} cannot do: run DDP sweeps with the default launcher (jobs one "
            "after another, each over trainer.devices processes: leave out hydra/launcher=parallel), or with "
            "hydra/launcher=slurm and hydra.launcher.tasks_per_node=trainer.devices (SLURM starts the ranks)")


def wait_for_other_ranks(trainer) -> None:
    """On rank 0 after testing: wait for the launched ranks to end, and fail the job if one failed (its error is
    in the command's output), so a job never looks finished while a rank died."""
    failed = [(rank, process.wait()) for rank, process in enumerate(launched_ranks(trainer), start=1)]
    failed = [(rank, status) for rank, status in failed if status != 0]
    if failed:
        raise RuntimeError("DDP ranks failed: " + ", ".join(f"rank {rank} exited with status {status}"
                                                            for rank, status in failed))
