"""Jobs that ended without results: a failed job writes failure.json into its run dir, so that a sweep
goes on past it and reports list it instead of silently dropping it."""

import json
import traceback
from pathlib import Path

import pandas as pd

from emotion_lightning.atomic import write_text
from emotion_lightning.run_info import config_choices

FAILURE_FILE = "failure.json"


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


def _overrides_of(run_dir: Path) -> list[str]:
    saved = run_dir / ".hydra" / "overrides.yaml"
    if not saved.is_file():
        return []
    return [line[2:].strip() for line in saved.read_text().splitlines() if line.startswith("- ")]


def read_unfinished(folder: str | Path) -> pd.DataFrame:
    """One row per job under `folder` without metrics.json: `failed` (its failure.json says why) or
    `no result` (a Hydra run dir holding neither file: still running, or killed)."""
    folder = Path(folder)
    run_dirs = {path.parent.parent for path in folder.rglob(".hydra/config.yaml")}
    run_dirs |= {path.parent for path in folder.rglob(FAILURE_FILE)}
    rows = []
    for run_dir in sorted(run_dirs):
        if (run_dir / "metrics.json").is_file():
            continue  # finished; a failure.json beside it is from an earlier, resumed attempt
        failure = run_dir / FAILURE_FILE
        if failure.is_file():
            record = json.loads(failure.read_text())
            rows.append({"run_dir": str(run_dir), "status": "failed", "error": record["error"],
                         "overrides": " ".join(record.get("overrides", []))})
        else:
            rows.append({"run_dir": str(run_dir), "status": "no result", "error": "no metrics.json or failure.json",
                         "overrides": " ".join(_overrides_of(run_dir))})
    return pd.DataFrame(rows, columns=["run_dir", "status", "error", "overrides"])
