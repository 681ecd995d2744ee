"""Train a model and test its best checkpoint: `python -m emotion_lightning.train [overrides]`."""

import logging
import os
from pathlib import Path

import hydra
import lightning as L
from omegaconf import DictConfig

import emotion_lightning  # noqa: F401  (registers the config resolvers)
from emotion_lightning.data.errors import SettingError, UsageError
from emotion_lightning.evaluation.sweep_calibration import discard_logits, save_val_logits
from emotion_lightning.evaluation.test_results import predictions_table, save_report, test_report
from emotion_lightning.models.classical import FeatureClassifier
from emotion_lightning.training.build import build_datamodule, build_model, use_feature_cache
from emotion_lightning.training.commands import check_command_line, command
from emotion_lightning.training.distributed import ddp_job, process_rank, rank_zero
from emotion_lightning.training.failures import record_failure
from emotion_lightning.training.fit import checked_resume, finished_record, fit_and_test_classical, fit_and_test_lightning
from emotion_lightning.training.gpu_slots import releasing_gpu
from emotion_lightning.training.loggers import build_loggers, finish_wandb, log_report
from emotion_lightning.training.resolvers import config_dir
from emotion_lightning.training.run_facts import resolved_config, run_record

log = logging.getLogger(__name__)
MONITORS = ("val_ua", "val_wa", "val_macro_f1")  # logged each validation epoch; higher is better


def train(cfg: DictConfig) -> dict:
    """Train and test the configured model; write metrics.json and plots to the run dir."""
    if cfg.monitor not in MONITORS:  # checkpointing, early stopping and the plateau scheduler all maximise it
        raise SettingError(f"monitor={cfg.monitor}; use a validation score where higher is better: "
                           f"{', '.join(MONITORS)}")
    resume_from = checked_resume(cfg)  # before anything is written into the run dir
    if (finished := finished_record(cfg)) is not None:
        log.info("%s/metrics.json: this run finished earlier; skipped (delete metrics.json to test it again)",
                 cfg.paths.output_dir)
        return finished
    if rank_zero():
        discard_logits(Path(cfg.paths.output_dir))
    # one stream per DDP rank (crops, masks and mixup draws differ between shards); rank 0 and one process: the seed
    L.seed_everything(cfg.seed + process_rank(cfg.trainer.get("num_nodes") or 1), workers=True)
    # ... but one shuffle for all: Lightning seeds its DistributedSampler from PL_GLOBAL_SEED, and ranks shuffling
    # differently would take overlapping shards (some training clips twice an epoch, others never)
    os.environ["PL_GLOBAL_SEED"] = str(cfg.seed)
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule)
    use_feature_cache(cfg, model, datamodule)
    loggers = build_loggers(cfg, resolved_config(cfg))
    if isinstance(model, FeatureClassifier):
        fit_facts = fit_and_test_classical(model, datamodule)
    else:
        fit_facts = fit_and_test_lightning(cfg, model, datamodule, loggers, resume_from)
    report = run_record(cfg, test_report(model, datamodule), model, datamodule, **fit_facts)
    if rank_zero():  # every rank holds the same gathered results; one writes them
        save_report(Path(cfg.paths.output_dir), report, predictions_table(model, datamodule))
        if report.get("temperature_fitted_on") and not model.trainable:  # an ensemble: for its sweep's calibrate
            save_val_logits(Path(cfg.paths.output_dir), model, datamodule)
        log_report(loggers, report, Path(cfg.paths.output_dir))
    return report


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> float | None:
    # A failed job leaves failure.json and re-raises: Hydra's launchers still run the sweep's other jobs,
    # then the command exits non-zero with the first error, so a sweep with a failure never looks clean.
    # A UsageError (missing data, a bad setting) is also recorded, then shown as one message (training.commands).
    with command(), ddp_job(), releasing_gpu():
        failed = True
        try:
            report = train(cfg)
            failed = False
        except Exception as error:
            if rank_zero():  # a failed rank > 0 fails rank 0 too (training.distributed), which records it
                recorded = record_failure(cfg.paths.output_dir, error)
                (log.info if isinstance(error, UsageError) else log.error)("job failed; recorded in %s", recorded)
            raise
        finally:
            finish_wandb(failed)
    # The validation score, for Hydra sweepers that optimise a value (e.g. Optuna); None where the run has none
    # (classical models, ensembles, fast_dev_run): never tune on test.
    return report.get(f"best_{cfg.monitor}")


if __name__ == "__main__":
    check_command_line()
    main()
