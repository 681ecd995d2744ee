"""Sweeps as users launch them: a parallel multirun and its report, a failing job, W&B offline runs, DDP on CPU."""

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import open_dict, read_write

from emotion_lightning.training.distributed import local_rank, process_rank, rank_zero
from emotion_lightning.training.gpu_slots import free_gpu, releasing_gpu, take_gpu
from emotion_lightning.training.resolvers import job_device
from tests.helpers import fake_slurm
from tests.helpers.configs import TINY_WHISPER_OVERRIDE

REPO = Path(__file__).resolve().parents[1]
SWEEP = ["model=resnet,lstm", "robustness=clean,volume"]  # 2 models x 2 test conditions: 4 jobs


def run_module(module: str, *args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env)


def quick(data_dir: Path, cache: Path) -> list[str]:
    return [f"paths.data_dir={data_dir}", f"paths.cache_dir={cache}", "trainer.max_epochs=1", "data.batch_size=16"]


def wandb_records(run_file: Path) -> list:
    """The protobuf records of an offline W&B run file (a LevelDB-style log: 7-byte header, 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2

    data, position, records, pending = run_file.read_bytes(), 7, [], b""
    while position + 7 <= len(data):
        if 32768 - position % 32768 < 7:
            position += 32768 - position % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        if kind == 0:
            break
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


@pytest.fixture(scope="module")
def wandb_env(tmp_path_factory):
    home = tmp_path_factory.mktemp("wandb_home")
    return {**os.environ, "WANDB_DATA_DIR": str(home), "WANDB_CACHE_DIR": str(home), "WANDB_CONFIG_DIR": str(home),
            "WANDB_SILENT": "true"}


@pytest.fixture(scope="module")
def tiny_sweep(data_dir, tmp_path_factory, wandb_env):
    """4 jobs, 2 at a time (joblib launcher), logged to CSV and offline W&B; then the report over them."""
    sweep = tmp_path_factory.mktemp("sweeps") / "tiny_sweep"
    result = run_module("emotion_lightning.train", "-m", "hydra/launcher=parallel", "trainer=auto", *SWEEP,
                        "logger=[csv,wandb]", *quick(data_dir, sweep.parent / "cache"), f"hydra.sweep.dir={sweep}",
                        env=wandb_env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = run_module("emotion_lightning.report", str(sweep), "--out", str(sweep.parent / "report"))
    assert report.returncode == 0, report.stderr[-3000:]
    return sweep, sweep.parent / "report"


def test_job_device_is_gpu_zero_in_a_single_run_else_the_cpu():
    assert (job_device("accelerator", gpus=2), job_device("devices", gpus=2), job_device("precision", gpus=2)) == (
        "gpu", [0], "16-mixed")
    assert (job_device("accelerator", gpus=0), job_device("devices", gpus=0),
            job_device("precision", gpus=0)) == ("cpu", 1, "32-true")
    with pytest.raises(ValueError, match="job_device:device.*accelerator"):
        job_device("device", gpus=0)


def test_parallel_jobs_take_the_gpu_the_fewest_running_jobs_hold_and_free_it_when_they_end(tmp_path):
    # each lock file is opened on its own, as by the parallel launcher's worker processes
    jobs = {job: take_gpu(tmp_path, gpus=2, job=job) for job in (0, 1)}
    assert [gpu for gpu, _ in jobs.values()] == [0, 1]
    free_gpu(jobs.pop(1)[1])  # job 1 ended first: job 2 gets its GPU (by job number it would share GPU 0)
    jobs[2] = take_gpu(tmp_path, gpus=2, job=2)
    jobs[3] = take_gpu(tmp_path, gpus=2, job=3)  # both GPUs busy: the lowest of the least held
    assert (jobs[2][0], jobs[3][0]) == (1, 0)
    jobs[3][1].close()  # a job whose process died: its lock is gone, its file is cleaned up by the next choice
    jobs[4] = take_gpu(tmp_path, gpus=2, job=4)
    assert jobs[4][0] == 0 and not (tmp_path / "gpu0.job3").exists()
    assert sorted(path.name for path in tmp_path.glob("gpu*")) == ["gpu0.job0", "gpu0.job4", "gpu1.job2"]


def as_multirun_job(number: int):
    """The composed config's Hydra settings as those of job `number` of a multirun."""
    hydra = HydraConfig.get()
    with read_write(hydra), open_dict(hydra):
        hydra.mode, hydra.job.num = RunMode.MULTIRUN, number
    return hydra


def test_a_parallel_sweep_job_holds_its_gpu_until_it_ends_and_shares_the_memory_rule(compose_train, monkeypatch):
    monkeypatch.setattr("torch.cuda.device_count", lambda: 2)
    parallel = ["hydra/launcher=parallel", "hydra.launcher.n_jobs=6"]
    cfg = compose_train([*parallel, "trainer=auto"])
    slots = Path(as_multirun_job(5).sweep.dir) / ".gpu_slots"
    with releasing_gpu():
        assert cfg.trainer.devices == [0] and cfg.trainer.devices == [0]  # taken once, held
        assert [path.name for path in slots.glob("*/gpu*")] == ["gpu0.job5"]
        # 6 jobs at once over 2 GPUs: 3 share each GPU's free memory, a third of a single job's quarter each
        assert cfg.data.resident_fraction == pytest.approx(0.25 / 3)
    assert not list(slots.glob("*/gpu*"))  # freed when the job ended
    cpu = compose_train([*parallel, "trainer=cpu"])
    as_multirun_job(0)
    assert cpu.data.resident_fraction == pytest.approx(0.25 / 6)  # all 6 jobs share the machine's memory
    assert compose_train(["trainer=auto"]).data.resident_fraction == 0.25  # a single run


@pytest.mark.slow
def test_parallel_sweep_runs_every_combination_through_the_joblib_launcher(tiny_sweep):
    sweep, _ = tiny_sweep
    jobs = {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")}
    assert {(name, m["model"], m["choices"]["robustness"], m["condition"]) for name, m in jobs.items()} == {
        ("0_resnet_ravdess_speaker_independent_seed0", "resnet", "clean", "clean"),
        ("1_resnet_ravdess_speaker_independent_seed0", "resnet", "volume", "gain_20dB"),
        ("2_lstm_ravdess_speaker_independent_seed0", "lstm", "clean", "clean"),
        ("3_lstm_ravdess_speaker_independent_seed0", "lstm", "volume", "gain_20dB")}
    assert "JoblibLauncher" in (sweep / "multirun.yaml").read_text()


@pytest.mark.slow
def test_report_has_one_row_per_job_with_the_values_of_its_metrics_json(tiny_sweep):
    sweep, report = tiny_sweep
    jobs = pd.read_csv(report / "jobs.csv")
    assert len(jobs) == 4 and set(jobs["status"]) == {"ok"}
    for row in jobs.itertuples():
        metrics = json.loads((sweep / row.job / "metrics.json").read_text())
        assert (row.model, row.data, row.split, row.condition, row.seed) == (
            metrics["model"], metrics["data"], metrics["split"], metrics["condition"], metrics["seed"])
        assert (row.test_ua, row.test_wa, row.test_macro_f1) == pytest.approx(
            (metrics["test_ua"], metrics["test_wa"], metrics["test_macro_f1"]))
    summary = pd.read_csv(report / "summary.csv")
    assert sorted(zip(summary["model"], summary["condition"], summary["runs"])) == [
        ("lstm", "clean", 1), ("lstm", "gain_20dB", 1), ("resnet", "clean", 1), ("resnet", "gain_20dB", 1)]
    robustness = pd.read_csv(report / "robustness.csv", index_col=0)
    assert list(robustness.columns) == ["clean", "gain_20dB"] and sorted(robustness.index) == ["lstm", "resnet"]
    for row in jobs.itertuples():
        assert robustness.loc[row.model, row.condition] == pytest.approx(row.test_ua)
    f1 = pd.read_csv(report / "per_emotion_f1.csv", index_col=0)
    assert f1.shape == (4, 8)
    markdown = (report / "report.md").read_text()
    assert markdown.count("| ok |") == 4 and "## Mean test UA under each condition" in markdown
    page = (report / "report.html").read_text()
    # UA per configuration, per-emotion F1 bars, UA per condition, and per configuration (model x condition)
    # learning curves (logger=csv), a confusion matrix and a reliability diagram
    assert page.count("data:image/png;base64,") == 1 + 1 + 1 + 4 + 4 + 4
    assert "src='http" not in page and "<link" not in page  # self-contained: nothing fetched


@pytest.mark.slow
def test_wandb_offline_runs_are_named_tagged_grouped_and_carry_metrics(tiny_sweep):
    sweep, _ = tiny_sweep
    for metrics_path in sweep.glob("*/metrics.json"):
        metrics = json.loads(metrics_path.read_text())
        (run_file,) = metrics_path.parent.glob("wandb/offline-run-*/run-*.wandb")
        records = wandb_records(run_file)
        (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        job_name = metrics_path.parent.name.split("_", 1)[1]
        condition = metrics["choices"]["robustness"]  # the option's name (metrics' condition is its label)
        assert run.display_name == f"{job_name}_{condition}" and run.run_group == "tiny_sweep" and run.project == "emotion-lightning"
        assert set(run.tags) == {f"model:{metrics['model']}", "data:ravdess", "split:speaker_independent",
                                 f"condition:{condition}", "augment:none", f"seed:{metrics['seed']}"}
        summary = {item.key: item.value_json for r in records if r.WhichOneof("record_type") == "summary"
                   for item in r.summary.update}
        assert json.loads(summary["test_ua"]) == pytest.approx(metrics["test_ua"])
        config = {item.key for r in records if r.WhichOneof("record_type") == "config" for item in r.config.update}
        assert {"model", "data", "trainer", "seed"} <= config
        assert any(r.WhichOneof("record_type") == "artifact" for r in records)


@pytest.mark.slow
def test_a_failed_job_is_recorded_listed_and_the_sweep_goes_on(data_dir, tmp_path):
    sweep = tmp_path / "sweep"
    result = run_module("emotion_lightning.train", "-m", "model=svm", "split.test_fraction=1.5,0.15",
                        *quick(data_dir, tmp_path / "cache"), f"hydra.sweep.dir={sweep}")
    assert result.returncode != 0  # the command says something failed ...
    failure = json.loads((sweep / "0_svm_ravdess_speaker_independent_seed0" / "failure.json").read_text())
    assert failure["error"].startswith("SettingError: split=speaker_independent: fractions leave no training speaker")
    assert "Traceback" in failure["traceback"] and "split.test_fraction=1.5" in failure["overrides"]
    assert (sweep / "1_svm_ravdess_speaker_independent_seed0" / "metrics.json").is_file()  # ... after the next job ran
    report = run_module("emotion_lightning.report", str(sweep), "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr[-3000:]
    jobs = pd.read_csv(tmp_path / "report" / "jobs.csv")
    assert list(jobs["status"]) == ["failed", "ok"] and list(jobs["model"]) == ["svm", "svm"]
    assert "fractions leave no training speaker" in jobs["error"][0]
    assert "## Failed jobs" in (tmp_path / "report" / "report.md").read_text()


DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]  # two CPU processes (gloo)
SCORES = ("test_ua", "test_wa", "test_macro_f1", "confusion_matrix", "breakdowns", "tested_clips")


def scores(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {key: metrics[key] for key in SCORES}


@pytest.mark.slow
def test_ddp_trains_one_job_in_two_cpu_processes_scoring_every_clip_once(data_dir, tmp_path, wandb_env):
    # 15 test and 15 val clips over 2 ranks: Lightning's sampler pads each part with a repeated clip
    run = tmp_path / "run"
    result = run_module("emotion_lightning.train", *DDP, *quick(data_dir, tmp_path / "cache"), f"hydra.run.dir={run}",
                        "logger=[csv,wandb]", env=wandb_env)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "MEMBER: 1/2" in output and "MEMBER: 2/2" in output  # both ranks joined the process group
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["clips"]["test"] == metrics["tested_clips"] == 15 == sum(map(sum, metrics["confusion_matrix"]))
    assert sum(group["clips"] for group in metrics["breakdowns"]["speaker"].values()) == 15
    predictions = pd.read_csv(run / "predictions.csv")
    assert len(predictions) == predictions["file"].nunique() == 15
    # rank 1 wrote nothing of its own: no failure record (its W&B logger is Lightning's dummy), one W&B run
    assert not (run / "failure.json").exists() and len(list(run.glob("wandb/offline-run-*"))) == 1
    # the same checkpoint in one process: the same test scores, and its validation score is the one selected on
    (best,) = (run / "checkpoints").glob("epoch*.ckpt")
    for part in ("test", "val"):
        single = run_module("emotion_lightning.eval", f"ckpt={best}", f"part={part}",
                            f"paths.data_dir={data_dir}", f"hydra.run.dir={tmp_path}/{part}")
        assert single.returncode == 0, single.stderr[-3000:]
    assert scores(tmp_path / "test") == {key: metrics[key] for key in SCORES}
    assert json.loads((tmp_path / "val" / "metrics.json").read_text())["test_ua"] == pytest.approx(
        metrics["best_val_ua"], abs=1e-6)


def drawn_from_seed(draws: list, seed: int, within: int = 16) -> bool:
    """Whether `draws` are consecutive uniform draws among the first `within` of torch's generator seeded `seed`."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    stream = torch.rand(within, dtype=torch.float64, generator=generator).tolist()
    return any(stream[start:start + len(draws)] == draws for start in range(within - len(draws) + 1))


@pytest.mark.slow
def test_each_ddp_rank_draws_its_crops_from_its_own_seed_and_rank_zero_from_the_run_s_seed(data_dir, tmp_path):
    result = run_module("emotion_lightning.train", *DDP, *quick(data_dir, tmp_path / "cache"), "logger=none", "seed=7",
                        "trainer.limit_train_batches=1", "trainer.limit_val_batches=1",
                        "+callbacks.draws._target_=tests.helpers.callbacks.RecordRandomDraws",
                        f"+callbacks.draws.folder={tmp_path}/draws", f"hydra.run.dir={tmp_path}/run")
    assert result.returncode == 0, result.stderr[-3000:]
    recorded = {path.stem: json.loads(path.read_text()) for path in (tmp_path / "draws").glob("*.json")}
    assert set(recorded) == {"rank0", "rank1"}
    draws = {rank: record["draws"] for rank, record in recorded.items()}
    assert draws["rank0"] != draws["rank1"]
    assert drawn_from_seed(draws["rank0"], 7) and drawn_from_seed(draws["rank1"], 8)  # seed + rank
    # ... while both shuffle alike, so that their shards of the training clips cover them all, each once (but the
    # one clip the sampler repeats when their number is odd)
    shards = [set(recorded[rank]["clips"]) for rank in ("rank0", "rank1")]
    clips = json.loads((tmp_path / "run" / "metrics.json").read_text())["clips"]["train"]
    assert len(shards[0] & shards[1]) == clips % 2 and len(shards[0] | shards[1]) == clips


@pytest.mark.slow
def test_eval_of_a_checkpoint_in_two_processes_equals_one_process(trained_checkpoint, data_dir, tmp_path):
    # a noise condition (seeded per clip) on 15 test clips: one padded clip counted twice changed every score
    runs = {}
    for name, trainer in (("single", []), ("ddp", DDP)):
        result = run_module("emotion_lightning.eval", f"ckpt={trained_checkpoint}", f"paths.data_dir={data_dir}",
                            "robustness=noise", "robustness.snr_db=5", *trainer, f"hydra.run.dir={tmp_path}/{name}")
        assert result.returncode == 0, result.stderr[-3000:]
        runs[name] = scores(tmp_path / name)
    assert runs["ddp"] == runs["single"] and runs["ddp"]["tested_clips"] == 15
    assert sum(map(sum, runs["ddp"]["confusion_matrix"])) == 15
    single, ddp = (pd.read_csv(tmp_path / name / "predictions.csv") for name in ("single", "ddp"))
    assert ddp[["file", "true", "predicted"]].equals(single[["file", "true", "predicted"]])
    probabilities = [column for column in single if column.startswith("p_")]
    np.testing.assert_allclose(ddp[probabilities], single[probabilities], atol=1e-5)


@pytest.mark.slow
def test_a_ddp_sweep_is_one_multirun_and_a_rerun_skips_finished_jobs_and_resumes_the_others(data_dir, tmp_path):
    # Lightning starts rank 1 by running the command again: with `-m` it used to run the whole sweep a second time
    sweep, outputs = tmp_path / "sweep", tmp_path / "outputs"
    command = ["-m", "seed=0,1", *DDP, *quick(data_dir, tmp_path / "cache"), "logger=none", f"hydra.sweep.dir={sweep}",
               f"paths.outputs_dir={outputs}"]
    result = run_module("emotion_lightning.train", *command)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (result.stdout + result.stderr).count("MEMBER: 2/2") == 2  # each job started its own rank 1
    jobs = sorted(path.parent.name for path in tmp_path.rglob("metrics.json"))
    assert jobs == ["0_resnet_ravdess_speaker_independent_seed0", "1_resnet_ravdess_speaker_independent_seed1"]
    assert not outputs.exists()  # no second sweep (nor run) dir
    first = {job: json.loads((sweep / job / "metrics.json").read_text()) for job in jobs}
    assert all(sum(map(sum, metrics["confusion_matrix"])) == metrics["clips"]["test"] for metrics in first.values())

    # job 1 died before testing (its checkpoints written, no metrics.json); the same command again:
    finished = (sweep / jobs[0] / "metrics.json").read_bytes()
    (sweep / jobs[1] / "metrics.json").unlink()
    again = run_module("emotion_lightning.train", *command)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (sweep / jobs[0] / "metrics.json").read_bytes() == finished  # skipped, not tested again
    resumed = json.loads((sweep / jobs[1] / "metrics.json").read_text())
    assert resumed["resumed_from"] == str(sweep / jobs[1] / "checkpoints" / "last.ckpt")
    volatile = {"train_seconds", "resumed_from", "versions", "epochs_run"}
    assert {k: v for k, v in resumed.items() if k not in volatile} == {
        k: v for k, v in first[jobs[1]].items() if k not in volatile}


@pytest.mark.slow
def test_ddp_fine_tunes_a_layer_subset_of_an_encoder(data_dir, tmp_path):
    # plain strategy=ddp: the layers above the mix's top are frozen, so no trainable parameter goes without a gradient
    result = run_module("emotion_lightning.train", *DDP, "model=whisper_finetune", "model.network.checkpoint=null",
                        f"model.network.config={TINY_WHISPER_OVERRIDE}", "model.network.layers=[0,1]",
                        "audio.clip_seconds=0.5", *quick(data_dir, tmp_path / "cache"), "logger=none",
                        f"hydra.run.dir={tmp_path}/run")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["tested_clips"] == 15 == sum(map(sum, metrics["confusion_matrix"]))


LAUNCH = ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID",
          "SLURM_JOB_NAME")


@pytest.mark.parametrize("variables, num_nodes, rank, local", [
    ({}, 1, 0, 0),  # one process
    ({"LOCAL_RANK": "1", "NODE_RANK": "0", "WORLD_SIZE": "2"}, 1, 1, 1),  # Lightning's launcher, one machine
    ({"LOCAL_RANK": "1", "NODE_RANK": "1", "WORLD_SIZE": "4"}, 2, 3, 1),  # 2 per machine: machine 1's second
    ({"NODE_RANK": "1", "WORLD_SIZE": "4"}, 2, 2, 0),  # machine 1's first process, started by hand
    ({"SLURM_NTASKS": "4", "SLURM_PROCID": "3", "SLURM_LOCALID": "1"}, 2, 3, 1),  # SLURM's 4th task
    ({"RANK": "5", "LOCAL_RANK": "1"}, 2, 5, 1),  # torchrun
])
def test_process_rank_is_lightnings_global_rank_before_any_trainer(variables, num_nodes, rank, local, monkeypatch):
    for name in LAUNCH:
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert (process_rank(num_nodes), local_rank(), rank_zero()) == (rank, local, rank == 0)


def test_the_tasks_srun_starts_of_one_job_share_a_run_dir_named_by_slurm_job_and_step(compose_train, monkeypatch):
    for name in LAUNCH:
        monkeypatch.delenv(name, raising=False)
    assert "/runs/slurm" not in compose_train().hydra.run.dir  # named by time
    for name, value in {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "1", "SLURM_NTASKS": "2", "SLURM_PROCID": "1"}.items():
        monkeypatch.setenv(name, value)
    assert compose_train().hydra.run.dir.endswith("/runs/slurm4242.1_resnet_ravdess_speaker_independent_seed0")
    monkeypatch.setenv("SLURM_JOB_NAME", "interactive")  # an salloc shell: runs started by hand, named by time
    assert "/runs/slurm" not in compose_train().hydra.run.dir


@pytest.mark.slow
def test_a_two_node_slurm_job_through_the_submitit_launcher_trains_and_tests_every_clip_once(data_dir, tmp_path):
    # sbatch, srun and sacct stand-ins start the 2 tasks SLURM would (1 per node) as local processes, gloo over
    # 127.0.0.1; Lightning reads SLURM's variables and checks them against trainer.devices and trainer.num_nodes
    sweep = tmp_path / "sweep"
    result = run_module("emotion_lightning.train", "-m", "hydra/launcher=slurm", "trainer=ddp",
                        "trainer.accelerator=cpu", "trainer.devices=1", "trainer.num_nodes=2",
                        "hydra.launcher.gpus_per_node=0", *quick(data_dir, tmp_path / "cache"), "logger=none",
                        f"hydra.sweep.dir={sweep}", env=fake_slurm.install(tmp_path / "bin"), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (submission,) = sweep.glob(".submitit/*/*_submission.sh")
    assert "#SBATCH --nodes=2" in submission.read_text() and "#SBATCH --ntasks-per-node=1" in submission.read_text()
    logs = {task: "".join(path.read_text() for path in submission.parent.glob(f"*_{task}_log.*")) for task in (0, 1)}
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in logs[1] and "[rank: 1] Seed set to 1" in logs[1]  # node 1's task
    (metrics_path,) = tmp_path.rglob("metrics.json")  # one job, its files written once
    metrics = json.loads(metrics_path.read_text())
    assert metrics["settings"]["trainer.num_nodes"] == 2 and metrics["clips"]["test"] == 15
    assert metrics["tested_clips"] == 15 == sum(map(sum, metrics["confusion_matrix"]))
    assert not list(sweep.rglob("failure.json"))


def test_ddp_precision_is_mixed_on_gpus_and_full_on_cpu_processes(compose_train, monkeypatch):
    assert compose_train(["trainer=ddp", "trainer.accelerator=cpu"]).trainer.precision == "32-true"
    assert compose_train(["trainer=ddp", "trainer.accelerator=gpu"]).trainer.precision == "16-mixed"
    monkeypatch.setattr("torch.cuda.device_count", lambda: 2)
    assert compose_train(["trainer=ddp"]).trainer.precision == "16-mixed"  # auto, with GPUs visible


@pytest.mark.slow
def test_bf16_mixed_precision_trains_and_tests_end_to_end_on_cpu(data_dir, tmp_path):
    result = run_module("emotion_lightning.train", "trainer.precision=bf16-mixed", *quick(data_dir, tmp_path / "cache"),
                        "logger=none", f"hydra.run.dir={tmp_path}/run")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["settings"]["trainer.precision"] == "bf16-mixed"
    assert metrics["tested_clips"] == 15 == sum(map(sum, metrics["confusion_matrix"]))
    predictions = pd.read_csv(tmp_path / "run" / "predictions.csv")
    probabilities = predictions[[column for column in predictions if column.startswith("p_")]].to_numpy()
    assert np.isfinite(probabilities).all() and np.allclose(probabilities.sum(axis=1), 1, atol=1e-4)


def test_launcher_and_sweeper_configs_compose(compose_train):
    assert compose_train(["hydra/launcher=parallel"]).hydra.launcher.n_jobs == 2
    slurm = compose_train(["hydra/launcher=slurm"]).hydra.launcher
    assert slurm._target_.endswith("SlurmLauncher") and slurm.gpus_per_node == 1
    optuna = compose_train(["experiment=resnet_optuna"]).hydra.sweeper
    assert optuna._target_.endswith("OptunaSweeper") and optuna.direction == "maximize"
    assert set(optuna.params) == {"model.optimizer.lr", "model.optimizer.weight_decay", "model.network.dropout",
                                  "model.network.blocks_per_stage", "data.batch_size"}


TABLE_ROWS = sorted((REPO / "experiments").glob("*/*.yaml"))


@pytest.mark.parametrize("path", TABLE_ROWS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_table_row_names_its_table_row_and_its_command_and_shares_a_recipe(path):
    name = f"{path.parent.name}/{path.stem}"
    header = "".join(line for line in path.read_text().splitlines(keepends=True) if line.startswith("#"))
    assert "Reproduces" in header and "row" in header, name
    assert f"experiment={name}" in header, name
    assert "override /recipe:" in path.read_text(), f"{name}: take the training recipe from conf/recipe/"


def test_table_rows_are_grouped_by_table_and_compose_with_their_recipe(compose_train):
    assert {p.parent.name for p in TABLE_ROWS} == {"best_results", "speaker_independent", "cross_corpus", "robustness"}
    row = compose_train(["experiment=speaker_independent/wav2vec2"])
    assert row.model.optimizer._target_ == "torch.optim.AdamW" and row.model.optimizer.lr == 1e-4
    assert (row.data.batch_size, row.trainer.max_epochs, row.callbacks.early_stopping.patience) == (8, 20, 3)
    cross = compose_train(["experiment=cross_corpus/crema_d_to_tess_resnet"])
    assert (cross.data.batch_size, cross.trainer.max_epochs, cross.callbacks.early_stopping.patience) == (16, 30, 5)
    assert list(cross.split.test_corpora) == ["tess"] and "surprised" not in cross.data.classes
