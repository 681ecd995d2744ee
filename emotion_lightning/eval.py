"""Evaluate a checkpoint without training: `python -m emotion_lightning.eval ckpt=... [data=...] [split=...]`.

By default the checkpoint is tested on its own test part: its data and split settings (and seed) come from the
checkpoint. A test clip that the checkpoint trained or validated on stops eval before testing, unless
`allow_seen_clips=true`. `part=val` scores the split's validation clips instead (metrics.json's test_* fields then
hold their scores, and `tested_part: val`): the place to choose `test_crops` without looking at test.
"""

import logging
import sys
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

import emotion_lightning  # noqa: F401  (registers the config resolvers)
from emotion_lightning.data.errors import SettingError
from emotion_lightning.evaluation.identity import POOLED, describe_differences, differences, result_settings
from emotion_lightning.evaluation.test_results import predictions_table, save_report, test_report
from emotion_lightning.models.module import EmotionClassifier
from emotion_lightning.training.build import build_datamodule
from emotion_lightning.training.commands import check_command_line, command
from emotion_lightning.training.distributed import check_can_launch, ddp_job, rank_zero, wait_for_other_ranks
from emotion_lightning.training.fit import seen_clips
from emotion_lightning.training.gpu_slots import releasing_gpu
from emotion_lightning.training.resolvers import config_dir
from emotion_lightning.training.run_facts import config_choices, resolved_config, run_record

log = logging.getLogger(__name__)
# The settings that decide which clips are tested; `eval` takes them from the checkpoint unless given.
TEST_SIDE = ("data", "split", "seed")


class SeenClipsError(SettingError):
    """Test clips the checkpoint was trained or validated on: its score would be inflated."""


def rerooted(config, old: dict, new: DictConfig):
    """The checkpoint's data config with its data and cache folders moved to this machine's (`paths`): where
    the corpus lies cannot change a result."""
    moves = sorted(((str(old.get(key)), str(new[key])) for key in ("data_dir", "cache_dir") if old.get(key)),
                   key=lambda move: -len(move[0]))  # the longer folder first, in case one holds the other
    if isinstance(config, dict):
        return {key: rerooted(value, old, new) for key, value in config.items()}
    if isinstance(config, list):
        return [rerooted(value, old, new) for value in config]
    if isinstance(config, str):
        for before, after in moves:
            if config == before or config.startswith(before + "/"):
                return after + config[len(before):]
    return config


def use_checkpoint_settings(cfg: DictConfig, trained: dict) -> None:
    """Fill in the checkpoint's data, split and seed where the command line chose none (and `test_crops`)."""
    chose_split = cfg.get("split") is not None
    if cfg.get("seed") is not None and not chose_split and cfg.seed != trained.get("seed"):
        raise SettingError(
            f"seed={cfg.seed}: the split is the checkpoint's own (trained with seed={trained.get('seed')}), and the seed "
            f"only picks a split; leave seed out to test on the checkpoint's test part, or choose a split too "
            f"(e.g. split=speaker_independent seed={cfg.seed}) to test on another partition")
    with open_dict(cfg):
        if cfg.get("seed") is None:
            cfg.seed = trained.get("seed")
        if cfg.get("data") is None:
            cfg.data = OmegaConf.create(rerooted(trained["data"], trained.get("paths", {}), cfg.paths))
        if not chose_split:
            cfg.split = OmegaConf.create(trained["split"])
        if cfg.get("test_crops") is not None:
            cfg.data.test_crops = cfg.test_crops


def check_seen_clips(cfg: DictConfig, model: EmotionClassifier, datamodule, seen: dict[str, int]) -> int:
    """The number of seen test clips; stop (naming the settings that caused it) unless allow_seen_clips=true."""
    count = sum(seen.values())
    if not count:
        return 0
    trained, choices = model.run_config, model.trained_choices or {}
    here = result_settings({key: OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key])
                            else cfg[key] for key in TEST_SIDE})
    there = result_settings({key: trained.get(key) for key in TEST_SIDE})
    found = differences(here, there, keys=[key for key in sorted(set(here) | set(there))
                                           if not key.startswith(("data.batch_size", "data.num_workers"))])
    current = config_choices()
    chosen = [f"{group}={current[group]} here, {group}={choices[group]} in the checkpoint" for group in ("data", "split")
              if group in current and group in choices and current[group] != choices[group]]
    cause = "\n".join([f"  {line}" for line in chosen] + ([describe_differences(found, "here", "in the checkpoint")]
                                                           if found else []))
    message = (f"{count} of {len(datamodule.rows('test'))} test clips were in the checkpoint's training data "
               f"({seen['train']} in train, {seen['val']} in val), so its test score would be inflated. "
               + (f"Caused by these data/split settings, which differ from the checkpoint's:\n{cause}\n" if cause else
                  "No data or split setting differs from the checkpoint's: the corpus files may have changed.\n")
               + "Leave out data=, split= and seed= to test on the checkpoint's own test part, or add "
                 "allow_seen_clips=true to test anyway (metrics.json then records seen_test_clips).")
    if not cfg.get("allow_seen_clips"):
        raise SeenClipsError(message)
    log.warning("allow_seen_clips=true: testing anyway. %s", message)
    return count


def eval_settings(cfg: DictConfig, trained: dict, seen_count: int | None, part: str) -> dict:
    """An evaluation's identity: the checkpoint's training settings (seed and fold pooled, as for training runs)
    plus this test's data, split, condition and trainer; a leaked one carries its count, so it never pools
    with clean ones."""
    own = result_settings(resolved_config(cfg))
    settings = {"evaluation": "checkpoint",
                **{f"trained.{key}": value for key, value in result_settings(trained).items() if key not in POOLED},
                **{key: value for key, value in own.items() if key.split(".")[0] in (*TEST_SIDE, "robustness", "trainer")}}
    if seen_count:
        settings["seen_test_clips"] = seen_count
    if part == "val":
        settings["part"] = "val"  # scores of the clips that chose the checkpoint never pool with test scores
    return settings


def evaluate(cfg: DictConfig) -> dict:
    """Test the checkpoint on its own (or the configured) data and split; metrics.json adds per-group breakdowns."""
    part = cfg.part
    if part not in ("test", "val"):
        raise SettingError(f"part={part}: eval scores the split's test clips (part=test) or its validation clips "
                           "(part=val, to choose test-side settings such as test_crops on validation)")
    model = EmotionClassifier.from_checkpoint(cfg.ckpt)
    trained = model.run_config
    use_checkpoint_settings(cfg, trained)
    # Labels are indexed by the checkpoint's classes, and clips cut as the model was trained.
    datamodule = build_datamodule(cfg, tested_part=part, classes=model.classes,
                                  sample_rate=trained["audio"]["sample_rate"], clip_seconds=trained["audio"]["clip_seconds"])
    seen = seen_clips(model, datamodule)
    if seen is not None and part == "val":
        seen["val"] = 0  # validation clips are what part=val scores; only trained-on clips would inflate it
    if seen is None:
        log.warning("%s records no clip IDs (written before they were recorded): cannot check that its test clips "
                    "were not trained on", cfg.ckpt)
    seen_count = check_seen_clips(cfg, model, datamodule, seen) if seen is not None else None
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[])
    check_can_launch(trainer)
    trainer.test(model, datamodule=datamodule)
    wait_for_other_ranks(trainer)
    trained_choices, choices = model.trained_choices or {}, config_choices()
    results = test_report(model, datamodule)
    if model.trained_clips:  # trained on: the checkpoint's corpora, not the train part of this eval's split
        results["train_corpora"] = sorted({clip.split(":", 1)[0] for clip in model.trained_clips["train"]})
    report = run_record(
        cfg, results, model, datamodule,
        ckpt_path=str(Path(cfg.ckpt).resolve()), model=trained.get("model", {}).get("name", "model"),
        augment=trained.get("augment", {}).get("name", "none"),
        data=choices.get("data", trained_choices.get("data", "custom")),
        split=choices.get("split", trained_choices.get("split", type(datamodule.split).__name__)),
        seen_test_clips=seen_count, settings=eval_settings(cfg, trained, seen_count, part), tested_part=part,
        trained_on={"data": trained["data"].get("include") or sorted(trained["data"]["corpora"]),
                    "split": trained_choices.get("split"), "seed": trained.get("seed")})
    if rank_zero():
        save_report(Path(cfg.paths.output_dir), report, predictions_table(model, datamodule))
    return report


def setting_without_its_group(overrides: list[str]) -> str | None:
    """An error for `split.fold=1` (or `data.X=...`) without `split=` (`data=`): eval's data and split are the
    checkpoint's unless a group is chosen, so Hydra has no `split` to set a key in (its own message then suggests
    `+split.fold=1`, which would make a split of one key)."""
    keys = [override.split("=", 1)[0] for override in overrides if not override.startswith("-")]
    for key in keys:
        group = key.split(".", 1)[0]
        if group in ("data", "split") and "." in key and group not in keys:
            example = "split=speaker_kfold split.fold=1" if group == "split" else "data=ravdess data.batch_size=64"
            return (f"{key}: eval tests on the checkpoint's own {group} unless one is chosen, so there is no {group} "
                    f"setting to change; choose the group as well (e.g. {example}), or leave {key} out")
    return None


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="eval")
def main(cfg: DictConfig) -> float:
    with command(), ddp_job(), releasing_gpu():
        return evaluate(cfg)["test_ua"]


if __name__ == "__main__":
    check_command_line()
    if problem := setting_without_its_group(sys.argv[1:]):
        sys.exit(f"error: {problem}")
    main()
