"""What every command shares around its work: expected errors as one message, no run dir left empty by a
failed single run (a failed job of a sweep keeps its failure.json, for the report), and no third-party chatter.

    @hydra.main(...)
    def main(cfg):
        with command():
            ...

A UsageError (emotion_lightning.data.errors) prints `error: MESSAGE` on stderr and exits with status 1; in a
multirun it fails only its job (the launcher goes on) and the sweep ends with the message, still without a
traceback. HYDRA_FULL_ERROR=1 shows the full traceback, as for any other error. A command line that Hydra would
answer with a traceback is refused the same way before Hydra starts:

    if __name__ == "__main__":
        check_command_line()
        main()
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
# Warnings about other libraries' deprecated internals (message regex), e.g. Lightning's use of torch's pytree;
# and Lightning's note on modules in eval mode, which frozen encoders (and partial fine-tuning's frozen layers) are
# on purpose, so that their dropout never runs.
QUIET_WARNINGS = (r".*LeafSpec.*", r".*torchvision.*", r".*onnxscript.*", r".*module\(s\) in eval mode at the start.*")


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


def command_line_problem(argv: list[str]) -> str | None:
    """What is wrong with a command line that Hydra would answer with a traceback (two of its modes at once, such
    as `--cfg job -m`) or that uses another name for the checkpoint (`ckpt_path=`); None if nothing."""
    from hydra._internal.utils import get_args_parser  # the parser hydra.main reads the same command line with

    args, _ = get_args_parser().parse_known_args(argv)
    if args.multirun and (args.cfg or args.info is not None or args.shell_completion):
        shown = f"--cfg {args.cfg}" if args.cfg else "--info" if args.info is not None else "--shell-completion"
        return (f"{shown} shows one job and -m runs a sweep; drop -m and give each swept setting one value "
                f"(e.g. seed=0, not seed=0,1,2)")
    if args.run + args.multirun + (args.cfg is not None) + args.shell_completion + (args.info is not None) > 1:
        return "use one of --run, --multirun (-m), --cfg, --info and --shell-completion at a time"
    for override in args.overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if key == "ckpt_path":
            return f"{key}: every command takes its checkpoint as ckpt= (ckpt={value or 'PATH'})"
    return None


def check_command_line(status: int = 1) -> None:
    """Exit with `error: PROBLEM` (no traceback, before Hydra starts) if the command line has one of the problems
    above; `status` as for `command`."""
    if problem := command_line_problem(sys.argv[1:]):
        print(f"error: {problem}", file=sys.stderr, flush=True)
        raise SystemExit(status)


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
