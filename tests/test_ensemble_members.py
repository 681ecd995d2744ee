"""Ensembles found in sweep dirs (`model.sweeps`): each job takes the runs that tested its own test clips, and
the folds of one such ensemble pool into one configuration."""

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from emotion_lightning.data.errors import SettingError
from emotion_lightning.data.splits import clip_keys
from emotion_lightning.evaluation.aggregate import aggregate, read_runs
from emotion_lightning.training.build import build_model
from emotion_lightning.training.ensemble_members import member_checkpoints
from emotion_lightning.training.run_facts import resolved_config, run_record

ACTORS = range(1, 7)  # one actor a fold


def split_table(fold: int) -> pd.DataFrame:
    """A split.csv of six folds of one actor: `fold` tests, the next one validates."""
    rows = []
    for actor in ACTORS:
        part = "test" if actor == fold + 1 else "val" if actor == (fold + 1) % 6 + 1 else "train"
        rows += [{"file": f"Actor_{actor:02d}/03-01-0{emotion}-01-01-01-{actor:02d}.wav", "corpus": "ravdess",
                  "speaker": f"ravdess:{actor:02d}", "part": part} for emotion in range(1, 4)]
    return pd.DataFrame(rows)


def clips(fold: int, part: str) -> list[str]:
    table = split_table(fold)
    return clip_keys(table["corpus"], table["file"][table["part"] == part])


def job_datamodule(fold: int):
    """What member resolution reads of a set-up DataModule: its test clip IDs."""
    return SimpleNamespace(clip_ids=lambda part: clips(fold, part), split=None)


def write_run(sweep: Path, name: str, fold: int, checkpoint: Path | None = None, **metrics) -> Path:
    """A finished run dir of `fold`: split.csv, metrics.json and its best checkpoint (an empty file, or `checkpoint`)."""
    run = sweep / name
    (run / "checkpoints").mkdir(parents=True)
    split_table(fold).to_csv(run / "split.csv", index=False)
    best = run / "checkpoints" / "epoch003-val_ua0.5000.ckpt"
    best.write_bytes(checkpoint.read_bytes() if checkpoint else b"")
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    (run / "metrics.json").write_text(json.dumps({"tested_weights": "best", **metrics}))
    return run


def ensemble_config(compose_train, sweeps, fold: int, *overrides):
    return compose_train(["model=ensemble", f"model.sweeps=[{','.join(str(s) for s in sweeps)}]", "split=speaker_kfold",
                          f"split.fold={fold}", *overrides])


@pytest.fixture
def sweep(tmp_path) -> Path:
    """A sweep of 2 folds x 2 seeds, nested as Hydra writes them, plus a failed and an unfinished job of fold 0."""
    folder = tmp_path / "best_scratch"
    for fold in (0, 1):
        for seed in (0, 1):
            write_run(folder, f"{fold * 2 + seed}_simple_cnn_fold{fold}_seed{seed}", fold)
    (folder / "4_failed").mkdir()
    (folder / "4_failed" / "failure.json").write_text(json.dumps({"error": "SettingError: broken"}))
    (folder / "5_unfinished" / "checkpoints").mkdir(parents=True)
    (folder / "5_unfinished" / ".hydra").mkdir()
    (folder / "5_unfinished" / ".hydra" / "config.yaml").write_text("seed: 0\n")
    split_table(0).to_csv(folder / "5_unfinished" / "split.csv", index=False)
    return folder


@pytest.mark.parametrize("fold", [0, 1])
def test_each_fold_takes_the_best_checkpoints_of_its_own_seeds(sweep, fold, compose_train, caplog):
    caplog.set_level("INFO")
    members = member_checkpoints(ensemble_config(compose_train, [sweep], fold), job_datamodule(fold))
    assert members == sorted(str(sweep / f"{fold * 2 + seed}_simple_cnn_fold{fold}_seed{seed}" / "checkpoints" /
                                 "epoch003-val_ua0.5000.ckpt") for seed in (0, 1))
    assert "4_failed (failed: SettingError: broken)" in caplog.text
    assert "5_unfinished (no result: no metrics.json" in caplog.text


def test_the_checkpoint_metrics_json_names_is_the_member(sweep, compose_train):
    named = write_run(sweep, "6_named", 0, tested_checkpoint="checkpoints/last.ckpt")
    members = member_checkpoints(ensemble_config(compose_train, [sweep], 0), job_datamodule(0))
    assert str(named / "checkpoints" / "last.ckpt") in members and len(members) == 3


def test_a_missing_sweep_dir_or_too_few_members_is_a_setting_error(sweep, tmp_path, compose_train):
    with pytest.raises(SettingError, match=r"nope does not exist \(for split=speaker_kfold split.fold=0\)"):
        member_checkpoints(ensemble_config(compose_train, [tmp_path / "nope"], 0), job_datamodule(0))
    with pytest.raises(SettingError, match="no member for split=speaker_kfold split.fold=2 .* 4 finished run"
                                           r"\(s\), 0 of them on this job's test clips"):
        member_checkpoints(ensemble_config(compose_train, [sweep], 2), job_datamodule(2))
    one_seed = tmp_path / "one_seed"
    write_run(one_seed, "0_fold0", 0)
    with pytest.raises(SettingError, match="1 member for split=speaker_kfold split.fold=0, an ensemble needs at least "
                                           r"two \(.*one_seed: 1 finished run\(s\), 1 of them"):
        member_checkpoints(ensemble_config(compose_train, [one_seed], 0), job_datamodule(0))
    # another sweep dir makes up the second member
    both = member_checkpoints(ensemble_config(compose_train, [sweep, one_seed], 0), job_datamodule(0))
    assert len(both) == 3 and both == sorted(both)


def test_exactly_one_of_checkpoints_and_sweeps(sweep, compose_train):
    for overrides in (["model=ensemble"], ["model=ensemble", f"model.sweeps=[{sweep}]", "model.checkpoints=[a,b]"]):
        with pytest.raises(SettingError, match="exactly one of model.checkpoints"):
            member_checkpoints(compose_train(overrides), job_datamodule(0))
    assert member_checkpoints(compose_train(["model=ensemble", "model.checkpoints=[a,b]"]), job_datamodule(0)) is None


def test_the_ensemble_is_built_from_the_found_checkpoints(tmp_path, compose_train):
    member_cfg = compose_train(["model=simple_cnn", "split=speaker_kfold", "split.fold=0"])
    member = build_model(member_cfg)
    member.set_training_data({part: clips(0, part) for part in ("train", "val")}, {})
    saved = tmp_path / "member.ckpt"
    torch.save({"state_dict": member.state_dict(), "run_config": resolved_config(member_cfg),
                "classes": member.classes, "clips": member.trained_clips}, saved)
    sweep = tmp_path / "sweep"
    for seed in (0, 1):
        write_run(sweep, f"{seed}_fold0", 0, checkpoint=saved)
    ensemble = build_model(ensemble_config(compose_train, [sweep], 0), job_datamodule(0))
    assert len(ensemble.network.members) == 2 and not ensemble.trainable
    assert ensemble.network.members[1].checkpoint_path.endswith("1_fold0/checkpoints/epoch003-val_ua0.5000.ckpt")


def test_the_folds_of_a_sweep_ensemble_pool_into_one_configuration(tmp_path, compose_train):
    def record(fold: int, *overrides) -> dict:
        cfg = ensemble_config(compose_train, ["outputs/multiruns/best_scratch"], fold, *overrides)
        members = [SimpleNamespace(run_config={"model": {"name": "simple_cnn"}, "seed": seed, "split": {"fold": fold}},
                                   checkpoint_path=f"best_scratch/{fold}_{seed}/checkpoints/epoch.ckpt")
                   for seed in range(1 + fold)]  # the folds need not have as many finished seeds
        tested = SimpleNamespace(name="ensemble", num_parameters=10, network=SimpleNamespace(members=members))
        results = {"test_ua": 0.5 + fold / 10, "test_wa": 0.5, "test_macro_f1": 0.5}
        return run_record(cfg, results, tested, SimpleNamespace(split=None, skipped=[]))

    runs = tmp_path / "runs"
    for fold in (0, 1):
        (runs / f"fold{fold}").mkdir(parents=True)
        (runs / f"fold{fold}" / "metrics.json").write_text(json.dumps(record(fold), default=str))
    (runs / "other").mkdir()
    (runs / "other" / "metrics.json").write_text(json.dumps(record(0, "model.sweeps=[elsewhere]"), default=str))
    metrics = json.loads((runs / "fold1" / "metrics.json").read_text())
    assert metrics["settings"]["model.sweeps"] == ["outputs/multiruns/best_scratch"]
    assert metrics["member_checkpoints"] == ["best_scratch/1_0/checkpoints/epoch.ckpt",
                                             "best_scratch/1_1/checkpoints/epoch.ckpt"]
    rows = {entry["settings"]: entry for entry in aggregate(read_runs(runs))}
    assert rows["model.sweeps=[\"outputs/multiruns/best_scratch\"]"]["runs"] == 2
    assert rows["model.sweeps=[\"elsewhere\"]"]["runs"] == 1
