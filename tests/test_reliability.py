"""A killed run resumes to the same result; same seed, same metrics; bad audio never stops a run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hydra.utils import instantiate
from lightning.pytorch import LightningModule, Trainer
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from emotion_lightning.data.audio import AudioError, load, probe
from emotion_lightning.data.corpora import Ravdess
from emotion_lightning.data.datamodule import EmotionDataModule
from emotion_lightning.data.splits import RandomSplit
from emotion_lightning.models.features import LogMelFrontend
from emotion_lightning.data.taxonomy import EMOTIONS
from tests.helpers import fake_slurm
from tests.helpers.audio import make_ravdess, tone
from tests.helpers.configs import TINY_WHISPER_OVERRIDE as TINY_WHISPER, emotion_map
from tests.helpers.training import REPO, run_train

VOLATILE = {"train_seconds", "resumed_from", "versions"}


def outcome(run_dir: Path) -> dict:
    """A finished run's metrics without the volatile ones, and its per-clip probabilities (predictions.csv): on
    fixture audio every UA may sit at chance, while the probabilities still tell two sets of weights apart."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {"metrics": {key: value for key, value in metrics.items() if key not in VOLATILE},
            "predictions": (run_dir / "predictions.csv").read_text()}


def train_overrides(data_dir, cache_dir, run_dir):
    # No monitored checkpoint: every epoch writes last.ckpt and the tested weights are the last epoch's. With a
    # monitor, the fixture's chance-level val UA never improves after epoch 0, so every run would test epoch 0's
    # weights, saved before any kill, and a resume that went wrong afterwards would pass unseen.
    return [f"paths.data_dir={data_dir}", f"paths.cache_dir={cache_dir}", f"hydra.run.dir={run_dir}",
            "trainer.max_epochs=4", "~callbacks.early_stopping", "callbacks.model_checkpoint.monitor=null",
            "data.batch_size=16", "seed=3", "logger=none"]


PATHS = {  # the data paths a run can take, each of which must resume exactly
    "memory-mapped": ["data.resident=false"],
    "resident, batch augmentation, codec variants and weight averaging": ["data.resident=true", "augment=waveform",
                                                                          "callbacks=ema"],
    "frozen whisper from its feature cache": ["model=whisper", "model.network.checkpoint=null",
                                              f"model.network.config={TINY_WHISPER}", "audio.clip_seconds=0.5"],
    "partial whisper from its cached layer (memory-mapped), frame masks and mixup": [
        "model=whisper_partial", "model.network.checkpoint=null", f"model.network.config={TINY_WHISPER}",
        "model.network.frozen_layers=1", "audio.clip_seconds=0.5", "augment=mixup", "data.resident=false"],
    "fine-tuned whisper: layer-wise rates, SpecAugment on its log-mel": [
        "experiment=pretrained_finetune", "model.network.checkpoint=null", f"model.network.config={TINY_WHISPER}",
        "audio.clip_seconds=0.5"],
}


def wait_for(path: Path, process: subprocess.Popen, seconds: float = 300) -> None:
    """Return as soon as `path` exists (or the process ended, or `seconds` passed)."""
    deadline = time.monotonic() + seconds
    while not path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.fixture(scope="module")
def reference_runs(data_dir, tmp_path_factory):
    """Uninterrupted runs' metrics by data path, each trained once per module."""
    runs = {}

    def metrics(path: str) -> dict:
        if path not in runs:
            run_dir = tmp_path_factory.mktemp("uninterrupted")
            result = run_train(*train_overrides(data_dir, run_dir.parent / "cache", run_dir), *PATHS[path])
            assert result.returncode == 0, result.stderr[-3000:]
            runs[path] = outcome(run_dir)
        return runs[path]

    return metrics


@pytest.fixture(scope="module")
def uninterrupted(reference_runs):
    return reference_runs("memory-mapped")


@pytest.mark.slow
def test_same_seed_gives_identical_metrics(uninterrupted, data_dir, tmp_path):
    result = run_train(*train_overrides(data_dir, tmp_path / "cache", tmp_path / "run"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert outcome(tmp_path / "run") == uninterrupted
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["versions"]["torch"].startswith("2.11") and metrics["seed"] == 3


@pytest.mark.slow
@pytest.mark.parametrize("path", list(PATHS))
def test_a_run_killed_mid_training_resumes_to_the_same_result(path, reference_runs, data_dir, tmp_path):
    uninterrupted = reference_runs(path)
    run_dir = tmp_path / "run"
    overrides = [*train_overrides(data_dir, tmp_path / "cache", run_dir), *PATHS[path]]
    command = [sys.executable, "-m", "emotion_lightning.train", *overrides]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run_dir / "checkpoints" / "last.ckpt"
    wait_for(last, process)
    process.send_signal(signal.SIGKILL)  # at once: every epoch writes last.ckpt, and tiny runs take milliseconds each
    process.wait()
    assert last.exists() and not (run_dir / "metrics.json").exists(), "the run should die before finishing"
    killed_at = torch.load(last, map_location="cpu", weights_only=False)["epoch"]
    assert killed_at < 3

    result = run_train(*overrides)  # same command, same run dir
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run_dir / "metrics.json").read_text())["resumed_from"] == str(last)
    assert outcome(run_dir) == uninterrupted


class Worsening(LightningModule):
    """A validation UA that falls every epoch: epoch 0 stays the best one."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return (self.weight - 1.0).pow(2).sum()

    def validation_step(self, batch, batch_idx):
        self.log("val_ua", 0.5 - 0.1 * self.current_epoch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_last_ckpt_holds_the_last_epoch_after_epochs_without_improvement(tmp_path):
    # What a killed run resumes from must be its last epoch; Lightning 2.6's own callback rewrites last.ckpt only
    # when the monitored score improves, so this run's would still hold epoch 0.
    settings = OmegaConf.load(REPO / "conf" / "callbacks" / "default.yaml").model_checkpoint
    checkpoint = instantiate(settings, dirpath=str(tmp_path), monitor="val_ua")
    loader = DataLoader(TensorDataset(torch.zeros(4, 1)), batch_size=1)
    trainer = Trainer(max_epochs=3, callbacks=[checkpoint], logger=False, enable_progress_bar=False,
                      enable_model_summary=False)
    trainer.fit(Worsening(), loader, loader)
    best = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=False)
    last = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=False)
    assert (best["epoch"], best["global_step"]) == (0, 4)
    assert (last["epoch"], last["global_step"]) == (2, 12)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["epoch000-val_ua0.5000.ckpt", "last.ckpt"]


@pytest.mark.slow
def test_a_ddp_sweep_killed_mid_training_and_run_again_ends_with_the_uninterrupted_metrics(data_dir, tmp_path):
    # two CPU processes; the whole job (rank 0 and the rank it launched) killed once epoch 0's last.ckpt is written
    overrides = [o for o in train_overrides(data_dir, tmp_path / "cache", None) if not o.startswith("hydra.run.dir")]
    command = ["-m", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", *overrides,
               "trainer.max_epochs=3"]
    reference = run_train(*command, f"hydra.sweep.dir={tmp_path}/uninterrupted")
    assert reference.returncode == 0, reference.stderr[-3000:]
    (job,) = [path.parent.name for path in (tmp_path / "uninterrupted").glob("*/metrics.json")]

    sweep = [*command, f"hydra.sweep.dir={tmp_path}/sweep"]
    process = subprocess.Popen([sys.executable, "-m", "emotion_lightning.train", *sweep], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    last = tmp_path / "sweep" / job / "checkpoints" / "last.ckpt"
    wait_for(last, process)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert last.exists() and not (last.parent.parent / "metrics.json").exists(), "the job should die before testing"
    assert torch.load(last, map_location="cpu", weights_only=False)["epoch"] < 2

    again = run_train(*sweep)  # the same command and sweep dir
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((last.parent.parent / "metrics.json").read_text())["resumed_from"] == str(last)
    assert outcome(last.parent.parent) == outcome(tmp_path / "uninterrupted" / job)


@pytest.mark.slow
def test_a_two_node_slurm_job_cancelled_mid_training_and_run_again_ends_as_two_local_processes_do(data_dir, tmp_path):
    # hydra/launcher=slurm with sbatch/srun/sacct/scancel stand-ins (1 task on each of 2 nodes); one thread per
    # process, as Lightning's launcher gives 2 local processes on this machine, so that both runs add up alike
    env = {**fake_slurm.install(tmp_path / "bin"), "OMP_NUM_THREADS": "1"}
    overrides = [o for o in train_overrides(data_dir, tmp_path / "cache", None) if not o.startswith("hydra.run.dir")]
    command = ["-m", "trainer=ddp", "trainer.accelerator=cpu", *overrides, "trainer.max_epochs=3"]
    local = run_train(*command, "trainer.devices=2", f"hydra.sweep.dir={tmp_path}/local", env=env)
    assert local.returncode == 0, local.stderr[-3000:]
    (job,) = [path.parent.name for path in (tmp_path / "local").glob("*/metrics.json")]

    slurm = [*command, "hydra/launcher=slurm", "hydra.launcher.gpus_per_node=0", "trainer.devices=1",
             "trainer.num_nodes=2", f"hydra.sweep.dir={tmp_path}/sweep"]
    with open(tmp_path / "sweep.log", "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "emotion_lightning.train", *slurm], cwd=REPO, env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
    last = tmp_path / "sweep" / job / "checkpoints" / "last.ckpt"
    wait_for(last, process)
    tasks = "".join(path.read_text()[-2000:] for path in sorted((tmp_path / "sweep").glob(".submitit/*/*_log.err")))
    assert last.exists(), (tmp_path / "sweep.log").read_text()[-3000:] + tasks
    (job_id,) = [path.stem[4:] for path in (tmp_path / "bin").glob("job_*.pid")]
    subprocess.run(["scancel", job_id], env=env, check=True)  # both tasks killed at once
    process.kill()  # and the sweep command with them (submitit would wait a minute for the job's result first)
    process.wait()
    assert not (last.parent.parent / "metrics.json").exists()
    assert torch.load(last, map_location="cpu", weights_only=False)["epoch"] < 2

    again = run_train(*slurm, env=env)  # the same command and sweep dir
    assert again.returncode == 0, again.stderr[-3000:]
    resumed, uninterrupted = outcome(last.parent.parent), outcome(tmp_path / "local" / job)
    assert resumed["metrics"].pop("settings")["trainer.num_nodes"] == 2
    assert uninterrupted["metrics"].pop("settings")["trainer.devices"] == 2
    assert json.loads((last.parent.parent / "metrics.json").read_text())["resumed_from"] == str(last)
    assert resumed == uninterrupted


@pytest.mark.slow
def test_ckpt_last_without_a_checkpoint_is_a_clear_error(data_dir, tmp_path):
    result = run_train(*train_overrides(data_dir, tmp_path / "cache", tmp_path / "run"), "ckpt=last")
    assert result.returncode != 0
    assert "ckpt=last" in result.stderr and "does not exist" in result.stderr


def write_bad_and_odd_files(actor_dir):
    """One file per kind of trouble, each named as a valid RAVDESS clip of actor 01 (angry, varied codes)."""
    actor_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    angry = tone("angry", 1.0, 16000, 0)
    kinds = {}

    def name(statement, repetition, intensity="01"):
        return actor_dir / f"03-01-05-{intensity}-{statement}-{repetition}-01.wav"

    def add(kind, path):
        kinds[kind] = path.name
        return path

    add("empty", name("01", "01")).write_bytes(b"")
    add("random bytes", name("01", "02")).write_bytes(rng.bytes(5000))
    sf.write(str(add("truncated header", name("02", "01"))), angry, 16000)
    name("02", "01").write_bytes(name("02", "01").read_bytes()[:20])
    sf.write(str(add("nan samples", name("02", "02"))), np.where(np.arange(16000) == 5, np.nan, angry[:16000]).astype(np.float32), 16000, subtype="FLOAT")
    sf.write(str(add("inf samples", name("01", "01", "02"))), np.full(1600, np.inf, np.float32), 16000, subtype="FLOAT")
    sf.write(str(add("silence", name("01", "02", "02"))), np.zeros(16000, np.float32), 16000)
    sf.write(str(add("shorter than one frame", name("02", "01", "02"))), angry[:100], 16000)
    sf.write(str(add("one sample", name("02", "02", "02"))), angry[:1], 16000)
    return kinds


ODD_BUT_VALID = [  # (file name in actor 02, sample rate, channels, subtype, seconds)
    ("03-01-05-01-01-01-02.wav", 8000, 1, "PCM_U8", 1.0),
    ("03-01-05-01-01-02-02.wav", 44100, 1, "PCM_24", 1.0),
    ("03-01-05-01-02-01-02.wav", 96000, 1, "FLOAT", 1.0),
    ("03-01-05-01-02-02-02.wav", 22050, 6, "PCM_16", 1.0),
    ("03-01-05-02-01-01-02.wav", 11025, 2, "PCM_32", 1.0),
    ("03-01-05-02-01-02-02.wav", 16000, 1, "PCM_16", 120.0),
]


def test_bad_audio_is_skipped_with_reasons_and_odd_audio_is_used(tmp_path):
    root = tmp_path / "ravdess"
    make_ravdess(root, actors=range(3, 13))
    kinds = write_bad_and_odd_files(root / "Actor_01")
    for file_name, rate, channels, subtype, seconds in ODD_BUT_VALID:
        (root / "Actor_02").mkdir(exist_ok=True)
        signal_ = np.tile(tone("angry", seconds, rate, 1)[:, None], (1, channels)) * 0.9
        sf.write(str(root / "Actor_02" / file_name), signal_, rate, subtype=subtype)

    datamodule = EmotionDataModule({"ravdess": Ravdess(root, emotion_map("ravdess"))}, list(EMOTIONS),
                                   RandomSplit(seed=0), cache_dir=str(tmp_path / "cache"),
                                   batch_size=64)
    datamodule.setup()
    used = {Path(p).name for p in datamodule.manifest["path"]}
    for kind in ("empty", "random bytes", "truncated header", "nan samples", "inf samples"):
        assert kinds[kind] not in used, kind
    for kind in ("silence", "shorter than one frame", "one sample"):
        assert kinds[kind] in used, kind
    assert {entry[0] for entry in ODD_BUT_VALID} <= used
    skipped = {Path(p).name for p in datamodule.skipped["path"]}
    assert {kinds["empty"], kinds["random bytes"], kinds["truncated header"]} <= skipped

    frontend = LogMelFrontend()
    for part in ("train", "val", "test"):
        for waveform, _labels in datamodule._loader(part):
            assert waveform.shape[1] == 48000 and torch.isfinite(frontend(waveform)).all()


def test_undecodable_audio_behind_per_file_symlinks_is_skipped_too(tmp_path):
    # DVC and git-annex keep each file as a symlink into a store; the cache reports failures by resolved path
    root, store = tmp_path / "ravdess", tmp_path / "store"
    make_ravdess(root, actors=range(3, 13))
    kinds = write_bad_and_odd_files(store)
    (root / "Actor_01").mkdir()
    for name in kinds.values():
        (root / "Actor_01" / name).symlink_to(store / name)
    datamodule = EmotionDataModule({"ravdess": Ravdess(root, emotion_map("ravdess"))}, list(EMOTIONS),
                                   RandomSplit(seed=0), cache_dir=str(tmp_path / "cache"), batch_size=64)
    datamodule.setup()
    used = {Path(p).name for p in datamodule.manifest["path"]}
    assert kinds["nan samples"] not in used and kinds["inf samples"] not in used  # pass the header, fail decoding
    assert kinds["silence"] in used


def test_fuzzed_files_either_load_or_raise_audio_error(tmp_path):
    """Seeded fuzzing of the audio reader: random bytes, truncations and bit flips of real encodings."""
    rng = np.random.default_rng(1234)
    seeds = []
    for fmt, subtype, ext in [("WAV", "PCM_16", "wav"), ("FLAC", "PCM_16", "flac"), ("OGG", "VORBIS", "ogg"),
                              ("MP3", None, "mp3"), ("WAV", "FLOAT", "wav")]:
        path = tmp_path / f"seed.{fmt}.{ext}"
        sf.write(str(path), tone("sad", 0.5, 16000, 0), 16000, format=fmt, subtype=subtype)
        seeds.append((path.read_bytes(), ext))
    started, outcomes = time.monotonic(), {"loaded": 0, "refused": 0}
    for i in range(150):
        data, ext = seeds[i % len(seeds)]
        data = bytearray(data)
        mutation = i % 3
        if mutation == 0:
            data = data[: rng.integers(0, len(data))]
        elif mutation == 1:
            for position in rng.integers(0, len(data), size=rng.integers(1, 20)):
                data[position] ^= 1 << int(rng.integers(0, 8))
        else:
            data = bytearray(rng.bytes(int(rng.integers(0, 3000))))
        path = tmp_path / f"fuzz{i}.{ext}"
        path.write_bytes(bytes(data))
        try:
            probe(path)
            waveform = load(path, 16000)
        except AudioError:
            outcomes["refused"] += 1
            continue
        assert waveform.dtype == np.float32 and waveform.ndim == 1 and np.isfinite(waveform).all()
        outcomes["loaded"] += 1
    assert outcomes["refused"] > 0 and outcomes["loaded"] > 0
    assert time.monotonic() - started < 120


@pytest.mark.slow
def test_unknown_model_name_lists_the_available_ones(tmp_path):
    result = run_train("model=resnett", f"hydra.run.dir={tmp_path}")
    assert result.returncode != 0
    assert "Could not find 'model/resnett'" in result.stderr and "resnet" in result.stderr


def fixture_datamodule(data_dir, tmp_path, split, classes=EMOTIONS):
    corpus = Ravdess(data_dir / "ravdess", emotion_map("ravdess"))
    return EmotionDataModule({"ravdess": corpus}, list(classes), split, cache_dir=str(tmp_path / "cache"))


def test_cross_corpus_testing_classes_training_never_saw_is_refused_with_the_classes_to_keep(data_dir, tmp_path):
    from emotion_lightning.data.corpora import CremaD
    from emotion_lightning.data.splits import CrossCorpusSplit

    corpora = {"crema_d": CremaD(data_dir / "crema_d", emotion_map("crema_d")),
               "ravdess": Ravdess(data_dir / "ravdess", emotion_map("ravdess"))}
    module = EmotionDataModule(corpora, list(EMOTIONS), CrossCorpusSplit(["crema_d"], ["ravdess"]),
                               cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match=r"tests classes \['calm', 'surprised'\] that have no training clip.*"
                                         r"data.classes=\[neutral,happy,sad,angry,fearful,disgust\]"):
        module.setup()


def test_classes_that_match_no_clip_are_refused_before_training(data_dir, tmp_path):
    with pytest.raises(ValueError, match=r"no clips left after keeping data.classes=\['bored'\]"):
        fixture_datamodule(data_dir, tmp_path, RandomSplit(), classes=["bored"]).setup()


def test_a_split_leaving_a_class_untested_is_refused(data_dir, tmp_path):
    from emotion_lightning.data.splits import SpeakerIndependentSplit

    class DropCalmFromTest(SpeakerIndependentSplit):
        def assign(self, manifest):
            assignment = super().assign(manifest)
            assignment[(assignment == "test") & (manifest["emotion"] == "calm").to_numpy()] = "unused"
            return assignment

    with pytest.raises(ValueError, match=r"classes \['calm'\] with training clips but no test clip.*split.test_fraction"):
        fixture_datamodule(data_dir, tmp_path, DropCalmFromTest()).setup()


def test_random_states_are_kept_per_rank_and_restore_whatever_the_gpu_count(monkeypatch):
    from emotion_lightning.models import random_state

    gpu = {"state": torch.tensor([7], dtype=torch.uint8), "set": []}  # one generator per GPU, stubbed
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": gpu["state"])
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": gpu["set"].append(state))
    saved = random_state.all_ranks_random_states()  # one process: one entry, with its own GPU's generator only
    assert len(saved) == 1 and torch.equal(saved[0]["cuda"], gpu["state"])
    # a checkpoint of a 4-GPU node (one state per visible GPU, as before) resumed on one GPU: no IndexError
    old = {**saved[0], "cuda": [torch.tensor([index], dtype=torch.uint8) for index in range(4)]}
    random_state.restore_random_states(old)
    assert torch.equal(gpu["set"][-1], torch.tensor([0], dtype=torch.uint8))
    # two ranks saved: each rank restores its own streams; a third rank (resumed over more processes) keeps its own
    torch.manual_seed(1)
    rank_one = random_state.random_states()
    by_rank = [saved[0], rank_one]
    torch.manual_seed(5)
    random_state.restore_rank_random_states(by_rank, rank=1)
    assert torch.equal(torch.get_rng_state(), rank_one["torch"]) and torch.equal(gpu["set"][-1], gpu["state"])
    torch.manual_seed(5)
    kept = torch.get_rng_state()
    random_state.restore_rank_random_states(by_rank, rank=2)
    assert torch.equal(torch.get_rng_state(), kept)
