"""Config values only the running job knows: which device it gets in a sweep, and which sweep it is in.

    ${job_device:accelerator}  ${job_device:devices}  ${job_device:precision}   (conf/trainer/auto.yaml)
    ${device_precision:${.accelerator}}                                         (conf/trainer/ddp.yaml)
    ${memory_share:0.25,${oc.select:trainer.accelerator,cpu}}                   (conf/data/_datamodule.yaml)
    ${sweep_name:}                                                              (conf/logger/wandb.yaml)
    ${slurm_step:${now:%Y-%m-%d_%H-%M-%S}}                                      (conf/hydra/default.yaml)
    ${choice:data,checkpoint}                                                   (conf/eval.yaml)
    ${len:${data.classes}}                                                      (conf/model/*.yaml)
    ${project_root:}                                                            (conf/paths/default.yaml)
    ${wandb_offline:}                                                           (conf/logger/wandb.yaml)
    ${config_groups:}                                                           (conf/hydra/default.yaml)
"""

import math
import os
from pathlib import Path

from hydra.types import RunMode
from omegaconf import OmegaConf

from emotion_lightning.data.errors import SettingError
from emotion_lightning.training.gpu_slots import job_gpu


def job_number() -> int:
    """This job's number in a multirun (0 for a single run or outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return 0
    return int(HydraConfig.get().job.num)


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count()


def job_device(key: str, gpus: int | None = None):
    """One device per job: the CPU when no GPU is visible; else GPU 0 in a single run, and in a multirun the GPU
    that the fewest running jobs of the sweep hold (training.gpu_slots: parallel jobs spread over the GPUs, and a
    GPU whose job ended takes the next one). `key` is the Trainer argument wanted: accelerator, devices or
    precision."""
    gpus = visible_gpus() if gpus is None else gpus
    setting = ({"accelerator": "gpu", "devices": None, "precision": "16-mixed"} if gpus
               else {"accelerator": "cpu", "devices": 1, "precision": "32-true"})
    if key not in setting:
        raise SettingError(f"${{job_device:{key}}}: the key must be one of {sorted(setting)}")
    if key == "devices" and gpus:
        return [sweep_gpu(gpus)]
    return setting[key]


def sweep_gpu(gpus: int) -> int:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return 0
    return job_gpu(HydraConfig.get().sweep.dir, gpus, job_number())


def jobs_at_once() -> int:
    """How many jobs of this sweep run at once on this machine: the parallel launcher's n_jobs (as joblib counts
    it: -1 is one per CPU core), else 1."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return 1
    n_jobs = HydraConfig.get().launcher.get("n_jobs")
    if n_jobs is None:
        return 1
    import joblib

    return joblib.effective_n_jobs(n_jobs)


def memory_share(fraction: float, accelerator: str) -> float:
    """`fraction` of a device's free memory divided among the sweep's jobs that run on that device at once (the
    parallel jobs over the visible GPUs, rounded up; all of them on the CPU): jobs that start together each read
    the same free memory, and together must not take more than `fraction` of it."""
    gpus = visible_gpus() if accelerator in ("gpu", "cuda", "auto") else 0
    jobs = jobs_at_once()
    return fraction / (math.ceil(jobs / gpus) if gpus else jobs)


def device_precision(accelerator: str) -> str:
    """16-bit mixed precision where the trainer's accelerator is a GPU (`auto`: when one is visible), else 32-bit:
    CPU processes (DDP with accelerator=cpu) keep full precision."""
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and visible_gpus() > 0)
    return "16-mixed" if gpu else "32-true"


def slurm_step(default: str) -> str:
    """`slurm<job id>.<step id>` in a step that SLURM started as several tasks (`srun` of one DDP job over several
    GPUs or nodes), else `default`: every task names the same run dir (each would read its own clock), and a
    requeued job's step names it again, so it resumes from its last checkpoint."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    if int(os.environ.get("SLURM_NTASKS") or 1) < 2 or not SLURMEnvironment.detect():
        return default
    return f"slurm{os.environ['SLURM_JOB_ID']}.{os.environ.get('SLURM_STEP_ID', '0')}"


def sweep_name() -> str | None:
    """The multirun folder's name (groups a sweep's runs in W&B); None for a single run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return Path(HydraConfig.get().sweep.dir).name


PACKAGE = Path(__file__).resolve().parents[1]


def config_dir() -> str:
    """conf/, which every command reads: inside the package in an installed copy (the wheel carries it there, see
    setup.py), else beside the package in a checkout."""
    installed = PACKAGE / "conf"
    return str(installed if installed.is_dir() else PACKAGE.parent / "conf")


def project_root() -> str:
    """Default home of data/, cache/ and outputs/: a checkout's root (the folder holding conf/ and the package),
    whatever the directory a command is started from; the current directory for an installed copy, which has no
    project folder around it."""
    conf = Path(config_dir())
    return str(conf.parent if conf.parent != PACKAGE else Path.cwd())


def wandb_offline() -> bool:
    """W&B stays offline unless WANDB_MODE=online: the switch W&B's own offline hint names (its other one,
    `wandb online`, only clears a setting and cannot override a logger configured offline)."""
    return os.environ.get("WANDB_MODE", "offline").strip().lower() not in ("online", "run")


def choice(group: str, default: str) -> str:
    """The option chosen for a config group, or `default` where none is (eval's data and split default to the
    checkpoint's)."""
    from hydra.core.hydra_config import HydraConfig

    chosen = HydraConfig.get().runtime.choices.get(group) if HydraConfig.initialized() else None
    return str(chosen) if chosen is not None else default


def config_groups() -> str:
    """`--help`'s list of the config groups this command composes, one `group: option, ...` line each, and one more
    per folder of options (`experiment: robustness/lstm, ...`, as typed). Names starting with `_` are building
    blocks that other configs include (conf/data/_datamodule.yaml), not choices, and are left out."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.object_type import ObjectType

    loader = GlobalHydra.instance().config_loader()

    def lines(group: str, folder: str = "") -> list[str]:
        path = f"{group}/{folder}".rstrip("/")
        public = lambda kind: sorted(name for name in loader.get_group_options(path, kind) if not name.startswith("_"))
        options = public(ObjectType.CONFIG)
        return ([f"{group}: {', '.join(folder + name for name in options)}"] if options else []) + \
            [line for sub in public(ObjectType.GROUP) for line in lines(group, f"{folder}{sub}/")]

    chosen = [group for group in HydraConfig.get().runtime.choices
              if "/" not in group and "@" not in group and not group.startswith(("hydra", "_"))]
    return "\n".join(line for group in sorted(chosen) for line in lines(group))


def register() -> None:
    # `${len:${data.classes}}` lets model configs size their output layer from the data config.
    for name, function in (("len", len), ("job_device", job_device), ("device_precision", device_precision),
                           ("memory_share", memory_share), ("slurm_step", slurm_step),
                           ("sweep_name", sweep_name), ("choice", choice),
                           ("project_root", project_root), ("wandb_offline", wandb_offline),
                           ("config_groups", config_groups)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function)
