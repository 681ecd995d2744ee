"""Run identity: the settings of a run's resolved config that can change its result.

Two runs are the same configuration when these settings match once the seed and the fold are left out
(`POOLED`); aggregate and report pool exactly those runs, and a restart resumes a checkpoint only when they
match. Settings that cannot change the numbers (where files go, loggers, progress bars, checkpoint file names)
are left out (`IGNORED`), so that the same experiment on another machine or with another logger still pools.
"""

import hashlib
import json
import re
from fnmatch import fnmatchcase

# Flattened keys (fnmatch patterns) that cannot change a result.
IGNORED = (
    "paths", "paths.*", "logger", "logger.*", "hydra", "hydra.*", "run_name", "ckpt", "force_resume",
    "allow_seen_clips", "ckpt_path",  # the checkpoint setting's earlier name, in older run configs
    "trainer.default_root_dir", "trainer.enable_progress_bar", "trainer.enable_model_summary",
    "trainer.log_every_n_steps", "trainer.logger",
    "callbacks.model_checkpoint._target_",  # which class writes the checkpoints (monitor and mode stay in)
    "callbacks.model_checkpoint.dirpath", "callbacks.model_checkpoint.filename",
    "callbacks.model_checkpoint.auto_insert_metric_name", "callbacks.model_checkpoint.save_last",
    "data.cache_dir", "data.corpora.*.root",
    # Where and how fast the data path runs, not what it computes (both data paths give the same batches).
    "data.resident", "data.resident_fraction", "feature_cache.dir", "feature_cache.device", "feature_cache.batch_size",
)
# Settings added after runs existed, with the value that does what runs made before them did: a run config
# without the key and one with it at this value are the same configuration (they pool, and a checkpoint resumes).
ADDED_LATER = {"model.label_smoothing": 0.0, "model.network.pooling": "mean", "data.test_crops": 1,
               "model.network.encoder_lr_scale": 1.0, "model.network.layer_decay": 1.0, "model.sweeps": None,
               # calibration changes the reported probabilities, never a label: earlier runs pool with calibrated ones
               # and their checkpoints resume
               "calibration": "temperature", "trainer.num_nodes": 1,
               "model.network.frozen_layers": None, "model.network.frame_masks": 0, "model.network.frame_mask_width": 10}
# What a configuration's runs differ in: its seed and its fold (split.seed is the seed, or the folds' fixed seed).
POOLED = ("seed", "split.seed", "split.fold")


def flatten(config, prefix: str = "") -> dict:
    """Nested dicts as `a.b.c` keys; lists and scalars are values."""
    if not isinstance(config, dict) or (prefix and not config):
        return {prefix: config}
    flat = {}
    for key, value in config.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def comparable(settings: dict) -> dict:
    """Flattened settings without the `IGNORED` ones and without the `ADDED_LATER` ones at their neutral value.
    Also applied to the settings stored in an older metrics.json or checkpoint, written before a key joined
    `IGNORED` or `ADDED_LATER`, so that its runs pool with newer ones and a finished run is still found finished."""
    return {key: value for key, value in settings.items()
            if not any(fnmatchcase(key, pattern) for pattern in IGNORED)
            and not (key in ADDED_LATER and value == ADDED_LATER[key])}


def result_settings(config: dict) -> dict:
    """The flattened settings of a resolved run config that can change its result.

    A setting of `ADDED_LATER` at its neutral value is left out (runs from before it existed lack it).
    `trainer.devices` as a list of one GPU index (trainer=auto gives a sweep's job one GPU) counts as 1 device:
    which GPU ran a job does not change it.
    """
    settings = comparable(flatten(config))
    if isinstance(settings.get("trainer.devices"), list):
        settings["trainer.devices"] = len(settings["trainer.devices"])
    return settings


def identity(settings: dict) -> str:
    """A configuration's key: its settings without the pooled ones, as canonical JSON."""
    return json.dumps({key: value for key, value in settings.items() if key not in POOLED}, sort_keys=True, default=str)


MEMBER = re.compile(r"([\w.-]+):[0-9a-f]{10}")  # one of member_identities' `model:digest`; group 1 the model


def member_identities(run_configs: list[dict]) -> list[str]:
    """An ensemble's members as `model:digest` of their configurations (settings without seed and fold): what
    makes an ensemble, where its checkpoint paths differ from fold to fold. Ensembles of the same member
    configurations on other folds or seeds then pool; other members make another row."""
    members = []
    for run_config in run_configs:
        settings = result_settings(run_config)
        digest = hashlib.sha1(identity(settings).encode()).hexdigest()[:10]
        members.append(f"{settings.get('model.name', 'model')}:{digest}")
    return members


UNSET = "(unset)"


def differences(here: dict, there: dict, keys=None) -> list[tuple[str, object, object]]:
    """(key, value here, value there) for each setting that differs, sorted by key."""
    keys = sorted(set(here) | set(there)) if keys is None else keys
    return [(key, here.get(key, UNSET), there.get(key, UNSET)) for key in keys
            if json.dumps(here.get(key, UNSET), default=str) != json.dumps(there.get(key, UNSET), default=str)]


def describe_differences(found: list[tuple[str, object, object]], here: str, there: str, limit: int = 12) -> str:
    """One line per differing setting: `key: A here, B there` (at most `limit`, then a count)."""
    lines = [f"  {key}: {json.dumps(a, default=str)} {here}, {json.dumps(b, default=str)} {there}"
             for key, a, b in found[:limit]]
    if len(found) > limit:
        lines.append(f"  ... and {len(found) - limit} more")
    return "\n".join(lines)
