"""The throughput targets, measured side by side in one run (RAVDESS speaker-independent, batch 32):

1. a ResNet training epoch with augment=waveform (batch noise/gain/band on the device, MP3 from its variant
   cache) against the clean epoch (target <= 1.5x);
2. frozen Whisper tiny.en, E epochs including the one-off feature pass, against the ResNet's E epochs, both
   through the real entry point (`python -m emotion_lightning.train`, early stopping off; target <= 1.0x);
3. the cached pipeline's epoch (loader + training step) against the network's pure forward+backward on the same
   batches made beforehand (target <= 1.10x), on the resident and the memory-mapped path;
4. Whisper base: an epoch of top-2-layer fine-tuning from the cached layer below them (model=whisper_base_partial;
   the one-off feature pass reported apart) against an epoch of full fine-tuning (target <= 0.40x).

Epochs of 1, 3 and 4 alternate in rounds (best of `--rounds`; 4: `--finetune-rounds`), so both sides see the same
background load.

    python benchmarks/throughput.py --data-dir ../shared/data --models-dir ../shared/models
    python benchmarks/throughput.py --quick --data-dir DIR --random-whisper     # a smoke test: minutes, not tens
    python benchmarks/throughput.py --device cuda ...                           # the same ratios on a GPU
    python benchmarks/throughput.py --lines 4 ...                               # one line alone
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from emotion_lightning.data.datamodule import EmotionDataModule
from emotion_lightning.data.splits import SpeakerIndependentSplit
from emotion_lightning.data.taxonomy import EMOTIONS
from emotion_lightning.models.augment import split_chain
from emotion_lightning.models.feature_cache import frozen_features
from emotion_lightning.models.features import LogMelFrontend
from emotion_lightning.models.module import EmotionClassifier
from emotion_lightning.models.pretrained import PretrainedEncoderClassifier
from emotion_lightning.models.resnet import ResNet

REPO = Path(__file__).resolve().parents[1]
TINY_WHISPER = ("{model_type: whisper, d_model: 32, encoder_layers: 2, encoder_attention_heads: 2, decoder_layers: 1, "
                "decoder_attention_heads: 2, encoder_ffn_dim: 64, decoder_ffn_dim: 64, num_mel_bins: 80, vocab_size: 64, "
                "pad_token_id: 1, bos_token_id: 2, eos_token_id: 2, decoder_start_token_id: 3}")
# for line 4 with --random-whisper: Whisper base's depth (6 layers), tiny widths
RANDOM_BASE = OmegaConf.to_container(OmegaConf.create(TINY_WHISPER.replace("encoder_layers: 2", "encoder_layers: 6")))


def datamodule(args, **settings) -> EmotionDataModule:
    corpus = instantiate(OmegaConf.load(REPO / "conf" / "corpus" / "ravdess.yaml"), root=f"{args.data_dir}/ravdess")
    module = EmotionDataModule({"ravdess": corpus}, list(EMOTIONS), SpeakerIndependentSplit(seed=0),
                               batch_size=args.batch_size, cache_dir=args.cache_dir, **settings)
    module.setup()
    module.device = lambda: torch.device(args.device)  # what the trainer's device would be
    return module


def resnet(batch_augment=None) -> EmotionClassifier:
    torch.manual_seed(0)
    model = EmotionClassifier(ResNet(), list(EMOTIONS), frontend=LogMelFrontend(), batch_augment=batch_augment)
    model.log = lambda *args, **kwargs: None  # no trainer to log to
    return model


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def epoch_seconds(model, batches, device: str) -> float:
    """One training epoch over `batches` (a loader or a list): training step (augmentation included), backward, step."""
    model.to(device).train()
    optimizer = model.optimizer_factory(params=model.parameters())
    sync(device)
    start = time.perf_counter()
    for index, (inputs, labels) in enumerate(batches):
        loss = model.training_step((inputs.to(device), labels.to(device)), index)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    sync(device)
    return time.perf_counter() - start


def whisper_finetuning(args, frozen_layers: int | None) -> EmotionClassifier:
    """Whisper base fine-tuned (AdamW, 1e-4): the whole encoder, or the layers above `frozen_layers`."""
    torch.manual_seed(0)
    encoder = {"config": RANDOM_BASE} if args.random_whisper else {"checkpoint": f"{args.models_dir}/whisper-base"}
    upper_only = {"frozen_layers": frozen_layers, "frame_masks": 2} if frozen_layers is not None else {}
    network = PretrainedEncoderClassifier(num_classes=len(EMOTIONS), freeze_encoder=False, **encoder, **upper_only)
    model = EmotionClassifier(network, list(EMOTIONS), optimizer=partial(torch.optim.AdamW, lr=1e-4))
    model.log = lambda *args, **kwargs: None
    return model


def alternate(rounds: int, contenders: dict) -> dict:
    """Best time of each contender over `rounds` rounds, the contenders taking turns within each round, after one
    untimed warm-up round (first-call costs: allocations, kernel selection, page faults of the memory map)."""
    for measure in contenders.values():
        measure()
    best = {name: float("inf") for name in contenders}
    for _ in range(rounds):
        for name, measure in contenders.items():
            best[name] = min(best[name], measure())
    return best


def entry_point_run(args, run_dir: Path, *overrides) -> tuple[float, dict]:
    command = [sys.executable, "-m", "emotion_lightning.train", f"paths.data_dir={os.path.abspath(args.data_dir)}",
               f"paths.cache_dir={os.path.abspath(args.cache_dir)}", f"trainer.max_epochs={args.epochs}",
               "~callbacks.early_stopping", "logger=none", f"hydra.run.dir={run_dir}",
               "trainer=auto" if args.device.startswith("cuda") else "trainer=cpu", *overrides]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start, json.loads((run_dir / "metrics.json").read_text())


class Lines(list):
    """The report's lines, printed as they come (a long run shows its progress)."""

    def __iadd__(self, new):
        print("\n".join(new), flush=True)
        return super().__iadd__(new)


def row(name: str, seconds: float, against: float, target: str) -> str:
    return f"{name:<66}{seconds:>9.2f}{seconds / against:>8.2f}x   {target}"


def augmentation_line(args, clean: EmotionDataModule, lines: Lines) -> None:
    """1. augmentation against the clean epoch"""
    chain = instantiate(OmegaConf.load(REPO / "conf" / "augment" / "_waveform.yaml").waveform)
    batch_augment, codec = split_chain(chain, 16000)
    start = time.perf_counter()
    augmented = datamodule(args, train_codec=codec)
    variants_seconds = time.perf_counter() - start
    models = {"clean": resnet(), "augmented": resnet(batch_augment)}
    best = alternate(args.rounds, {
        "clean": lambda: epoch_seconds(models["clean"], clean.train_dataloader(), args.device),
        "augmented": lambda: epoch_seconds(models["augmented"], augmented.train_dataloader(), args.device)})
    lines += ["1. augmentation (ResNet training epoch, the train part's "
              f"{len(clean.datasets['train'])} clips; codec variants opened or built in {variants_seconds:.1f} s)",
              row("   clean epoch", best["clean"], best["clean"], ""),
              row("   augment=waveform epoch", best["augmented"], best["clean"], "<= 1.50x")]



def pipeline_line(args, clean: EmotionDataModule, lines: Lines) -> None:
    """3. the pipeline against pre-made batches"""
    mapped = datamodule(args, resident=False)
    torch.manual_seed(0)
    premade = [(inputs.to(args.device), labels.to(args.device)) for inputs, labels in clean.train_dataloader()]
    model = resnet()
    best = alternate(args.rounds, {
        "premade": lambda: epoch_seconds(model, premade, args.device),
        "resident": lambda: epoch_seconds(model, clean.train_dataloader(), args.device),
        "mapped": lambda: epoch_seconds(model, mapped.train_dataloader(), args.device)})
    where = "resident" if clean.datasets["train"].resident is not None else "not resident (too big for the rule)"
    lines += ["3. the cached pipeline against the network alone (ResNet, clean)",
              row("   forward+backward on pre-made batches", best["premade"], best["premade"], ""),
              row(f"   cached pipeline epoch, {where}", best["resident"], best["premade"], "<= 1.10x"),
              row("   cached pipeline epoch, memory-mapped (per-item path)", best["mapped"], best["premade"], "<= 1.10x")]



def entry_point_line(args, lines: Lines) -> None:
    """2. frozen Whisper (feature pass included: a fresh feature cache) against the ResNet, full runs"""
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        resnet_wall, resnet_metrics = entry_point_run(args, scratch / "resnet", "model=resnet")
        encoder = ["model.network.checkpoint=null", f"model.network.config={TINY_WHISPER}"] if args.random_whisper \
            else [f"model.network.checkpoint={os.path.abspath(args.models_dir)}/whisper-tiny.en"]
        whisper_wall, whisper_metrics = entry_point_run(args, scratch / "whisper", "model=whisper", *encoder,
                                                        f"feature_cache.dir={scratch}/fresh")
    lines += [f"2. full runs through the entry point, {args.epochs} epochs each, wall time (start-up and test included)",
              row(f"   ResNet (fit {resnet_metrics['train_seconds']:.1f} s, test UA {resnet_metrics['test_ua']:.3f})",
                  resnet_wall, resnet_wall, ""),
              row(f"   frozen Whisper incl. feature pass (fit {whisper_metrics['train_seconds']:.1f} s, "
                  f"test UA {whisper_metrics['test_ua']:.3f})", whisper_wall, resnet_wall, "<= 1.00x")]



def finetuning_line(args, clean: EmotionDataModule, lines: Lines) -> None:
    """4. Whisper base: top-2-layer fine-tuning from the cache against full fine-tuning, one epoch each"""
    full = whisper_finetuning(args, None)
    top_two = whisper_finetuning(args, len(full.network.encoder.layers) - 2)
    cached = datamodule(args)
    start = time.perf_counter()
    store, frames = frozen_features(top_two.network, cached.cache, args.cache_dir, device=args.device)
    pass_seconds = time.perf_counter() - start
    cached.use_features(store, frames, parts=("train",))
    best = alternate(args.finetune_rounds, {
        "full": lambda: epoch_seconds(full, clean.train_dataloader(), args.device),
        "top two": lambda: epoch_seconds(top_two, cached.train_dataloader(), args.device)})
    name = "a random Whisper of base's depth" if args.random_whisper else "Whisper base"
    lines += [f"4. fine-tuning {name}, one training epoch (hidden state {top_two.network.frozen_layers} of every "
              f"clip cached once: opened or built in {pass_seconds:.1f} s)",
              row("   full fine-tuning (audio through the whole encoder)", best["full"], best["full"], ""),
              row("   top 2 layers from the cached layer below them", best["top two"], best["full"], "<= 0.40x")]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--models-dir", default=str(REPO.parent / "shared" / "models"))
    parser.add_argument("--cache-dir", default=str(REPO / "cache"))
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds for 1 and 3 (best is kept; 3 left line 3 reading 0.94-1.26x)")
    parser.add_argument("--epochs", type=int, default=30, help="epochs of the two entry-point runs of 2")
    parser.add_argument("--finetune-rounds", type=int, default=2, help="alternating rounds for 4 (a full fine-tuning "
                        "epoch of Whisper base takes minutes on a CPU)")
    parser.add_argument("--quick", action="store_true", help="1 round and 2 epochs: checks that it runs")
    parser.add_argument("--lines", default="1,2,3,4", help="the lines to measure, e.g. --lines 4")
    parser.add_argument("--random-whisper", action="store_true",
                        help="tiny random Whispers instead of MODELS_DIR/whisper-tiny.en (2) and whisper-base (4), for smoke tests")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.epochs, args.finetune_rounds = 1, 2, 1
    lines = Lines()
    lines += [f"device {args.device}, {torch.get_num_threads()} torch threads, batch {args.batch_size}, "
             f"load average {os.getloadavg()[0]:.1f}",
             f"{'':<66}{'seconds':>9}{'ratio':>9}   target"]

    wanted = set(args.lines.split(","))
    clean = datamodule(args)
    if "1" in wanted:
        augmentation_line(args, clean, lines)
    if "3" in wanted:  # before 2: it needs no subprocess
        pipeline_line(args, clean, lines)
    if "2" in wanted:
        entry_point_line(args, lines)
    if "4" in wanted:
        finetuning_line(args, clean, lines)
    print("\n".join(lines), flush=True)  # the table once more, in one piece



if __name__ == "__main__":
    main()
