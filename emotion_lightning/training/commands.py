"""What every command shares around its work: expected errors as one message, no run dir left empty by a
failed single run (a failed job of a sweep keeps its failure.json, for the report), and no third-party chatter.

    @hydra.main(...)
    def main(cfg):
        with command():
            ...

A UsageError (emotion_lightning.data.errors) prints `error: MESSAGE` on stderr and exits with status 1; in a
multirun it fails only its job (the launcher goes on) and the sweep ends with the message, still without a
traceback. HYDRA_FULL_ERROR=1 shows the full traceback, as for any other error.
"""

import logging
import os
import shutil
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

from emotion_lightning.data.errors import UsageError
from emotion_lightning.evaluation.unfinished import FAILURE_FILE
from emotion_lightning.training.failures import record_failure

# Messages of other libraries that say nothing about this run: advertisements and warnings about their own
# internals that a user cannot act on.
QUIET_LOG_MESSAGES = {
    "lightning.pytorch.utilities.rank_zero": ("💡 Tip:",),   # litlogger / litmodels advertisements
    "lightning.fabric.utilities.rank_zero": ("💡 Tip:",),
}
# Loggers of libraries whose INFO/WARNING lines narrate their internals: the ONNX exporter's registry (warns that
# torchvision, which nothing here uses, is not installed) and onnxscript's graph optimiser ("Removed 137 unused
# nodes", ...). Their errors still show.
QUIET_LOGGERS = ("torch.onnx", "onnxscript", "onnx_ir")
# Warnings about other libraries' deprecated internals (message regex), e.g. Lightning's use of torch's pytree.
QUIET_WARNINGS = (r".*LeafSpec.*", r".*torchvision.*", r".*onnxscript.*")


class _DropMessages(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def quiet_third_party() -> None:
    """Drop other libraries' tips and internal warnings (idempotent)."""
    for name, prefixes in QUIET_LOG_MESSAGES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(prefixes))
    for message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def full_error() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def _job() -> tuple[Path | None, bool]:
    """(this Hydra job's run dir, whether it is part of a multirun); (None, False) outside Hydra."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    if not HydraConfig.initialized():
        return None, False
    config = HydraConfig.get()
    output_dir = OmegaConf.select(config, "runtime.output_dir", default=None, throw_on_missing=False)
    return (Path(output_dir) if output_dir else None), config.mode == RunMode.MULTIRUN


def remove_if_only_hydra_files(run_dir: Path | None) -> bool:
    """Delete a run dir holding nothing but what Hydra writes into every one (.hydra/, the job's log): a job
    that failed before producing anything leaves no empty run dir behind. True if it was deleted."""
    if run_dir is None or not (run_dir / ".hydra").is_dir() or run_dir.resolve() == Path.cwd().resolve():
        return False
    if any(p.name != ".hydra" and not (p.is_file() and p.suffix == ".log") for p in run_dir.iterdir()):
        return False
    shutil.rmtree(run_dir, ignore_errors=True)
    return True


@contextmanager
def command(status: int = 1):
    """Run a command's work with the shared error handling and quieting described above; `status` is the exit
    status of an expected error (predict documents 2: nothing could run)."""
    quiet_third_party()
    try:
        yield
    except Exception as error:
        from emotion_lightning.training.distributed import rank_zero  # imports torch: predict's ONNX path must not

        run_dir, multirun = _job()
        if not rank_zero():  # DDP ranks > 0 share rank 0's run dir: rank 0 records the failure
            raise
        if multirun and run_dir is not None and not (run_dir / FAILURE_FILE).exists():
            record_failure(run_dir, error)  # a sweep's report lists the failed job (e.g. an eval -m over checkpoints)
        remove_if_only_hydra_files(run_dir)
        if not isinstance(error, UsageError) or full_error():
            raise
        if multirun:
            from hydra.errors import CompactHydraException  # Hydra prints these as their message alone

            raise CompactHydraException(f"error: {error}") from error
        print(f"error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(status) from None
