"""A failed job writes failure.json into its run dir, so that a sweep goes on past it and reports list it
instead of silently dropping it (evaluation.unfinished reads them)."""

import json
import traceback
from pathlib import Path

from emotion_lightning.data.atomic import write_text
from emotion_lightning.evaluation.unfinished import FAILURE_FILE
from emotion_lightning.training.run_facts import config_choices


def record_failure(run_dir: str | Path, error: BaseException) -> Path:
    """Write the error, its traceback and the job's overrides to RUN_DIR/failure.json."""
    from hydra.core.hydra_config import HydraConfig

    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    path = Path(run_dir) / FAILURE_FILE
    write_text(path, json.dumps({
        "error": f"{type(error).__name__}: {error}",
        "traceback": "".join(traceback.format_exception(error)),
        "overrides": overrides, "choices": config_choices(),
    }, indent=2))
    return path
