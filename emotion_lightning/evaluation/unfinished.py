"""Jobs that ended without results: failed ones (failure.json in the run dir) and ones with no result at all,
so that reports list them instead of silently dropping them."""

import json
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

FAILURE_FILE = "failure.json"


def _saved_job(run_dir: Path) -> dict:
    """What Hydra saved in RUN_DIR/.hydra: the overrides, the config choices (model, data, ...) and the seed."""
    saved = run_dir / ".hydra"
    if not (saved / "hydra.yaml").is_file():
        return {}
    hydra_config = OmegaConf.load(saved / "hydra.yaml").hydra
    choices = {group: str(option) for group, option in hydra_config.runtime.choices.items()
               if not group.startswith("hydra/") and option is not None}
    seed = OmegaConf.load(saved / "config.yaml").get("seed") if (saved / "config.yaml").is_file() else None
    return {"overrides": list(hydra_config.overrides.task), "choices": choices, "seed": seed}


def read_unfinished(folder: str | Path) -> pd.DataFrame:
    """One row per job under `folder` without metrics.json: `failed` (its failure.json says why) or
    `no result` (a Hydra run dir holding neither file: still running, or killed); with the job's config
    choices, seed and overrides as Hydra saved them."""
    folder = Path(folder)
    run_dirs = {path.parent.parent for path in folder.rglob(".hydra/config.yaml")}
    run_dirs |= {path.parent for path in folder.rglob(FAILURE_FILE)}
    rows = []
    for run_dir in sorted(run_dirs):
        if (run_dir / "metrics.json").is_file():
            continue  # finished; a failure.json beside it is from an earlier, resumed attempt
        failure = run_dir / FAILURE_FILE
        job = _saved_job(run_dir)
        if failure.is_file():
            job |= json.loads(failure.read_text())
            status, error = "failed", job["error"]
        else:
            status, error = "no result", "no metrics.json or failure.json"
        rows.append({**job.get("choices", {}), "seed": job.get("seed"), "run_dir": str(run_dir), "status": status,
                     "error": error, "overrides": " ".join(job.get("overrides", []))})
    return pd.DataFrame(rows, columns=["run_dir", "status", "error", "overrides"] + (
        sorted({key for row in rows for key in row} - {"run_dir", "status", "error", "overrides"}) if rows else []))
