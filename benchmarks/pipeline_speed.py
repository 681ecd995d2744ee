"""Training-epoch speed on RAVDESS: this framework's pipeline against a per-item pipeline, side by side.

Per-item pipeline (what the earlier project did): each __getitem__ decodes its file, resamples, crops and computes
its own log-mel spectrogram on the CPU. This pipeline: waveforms decoded once into a memory-mapped cache,
batches sliced from it, log-mels computed per batch inside the model. Both train the same ResNet on the
same speaker-independent training set with the same batch size, in this one process.

    python benchmarks/pipeline_speed.py --data-dir ../shared/data [--epochs 2]
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset

from emotion_lightning.data.audio import load
from emotion_lightning.data.datamodule import EmotionDataModule
from emotion_lightning.data.splits import SpeakerIndependentSplit
from emotion_lightning.models.features import LogMelFrontend
from emotion_lightning.models.resnet import ResNet
from emotion_lightning.data.taxonomy import EMOTIONS

REPO = Path(__file__).resolve().parents[1]


class PerItemDataset(Dataset):
    """Decode + resample + crop + log-mel inside __getitem__, one file at a time."""

    def __init__(self, paths, labels, sample_rate=16000, num_samples=48000):
        self.paths, self.labels, self.sample_rate, self.num_samples = paths, labels, sample_rate, num_samples
        self.frontend = LogMelFrontend(sample_rate)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        waveform = load(self.paths[index], self.sample_rate)
        clip = np.zeros(self.num_samples, np.float32)
        start = np.random.randint(max(len(waveform) - self.num_samples, 0) + 1)
        piece = waveform[start:start + self.num_samples]
        clip[:len(piece)] = piece
        features = self.frontend(torch.from_numpy(clip)[None])[0]
        return features, self.labels[index]


def train_epoch_seconds(loader, model, epochs):
    """Best-of-`epochs` seconds for one training epoch (data, forward, backward, step)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        for inputs, labels in loader:
            loss = torch.nn.functional.cross_entropy(model(inputs), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        times.append(time.perf_counter() - start)
    return min(times)


@torch.no_grad()
def feature_pass_seconds(loader, features, epochs):
    """Best-of-`epochs` seconds to produce every batch's log-mel features, without the network."""
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        for inputs, _labels in loader:
            features(inputs)
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--cache-dir", default=str(REPO / "cache"))
    parser.add_argument("--epochs", type=int, default=2, help="epochs per pipeline; the best is reported")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    torch.manual_seed(0)
    np.random.seed(0)

    corpus = instantiate(OmegaConf.load(REPO / "conf" / "corpus" / "ravdess.yaml"),
                         root=f"{args.data_dir}/ravdess")
    datamodule = EmotionDataModule({"ravdess": corpus}, list(EMOTIONS), SpeakerIndependentSplit(seed=0),
                                   batch_size=args.batch_size, cache_dir=args.cache_dir)
    datamodule.setup()  # builds the manifest and waveform cache once, outside the timing
    train_rows = datamodule.manifest[datamodule.assignment == "train"]
    labels = train_rows["emotion"].map(EMOTIONS.index).to_list()
    print(f"RAVDESS speaker-independent training set: {len(train_rows)} clips, batch {args.batch_size}, "
          f"{torch.get_num_threads()} torch threads")

    # The files users download are 48 kHz WAVs; only six are here, so they are cycled to the same count.
    originals = sorted(Path(args.data_dir, "ravdess_wav48k").rglob("*.wav"))
    pipelines = {"per-item, 16 kHz FLAC": (PerItemDataset(train_rows["path"].to_list(), labels), torch.nn.Identity())}
    if originals:
        cycled = [str(originals[i % len(originals)]) for i in range(len(labels))]
        pipelines["per-item, 48 kHz WAV originals"] = (PerItemDataset(cycled, labels), torch.nn.Identity())
    pipelines["cached waveforms + batched mel"] = (None, LogMelFrontend())

    rows = {}
    for name, (dataset, features) in pipelines.items():
        loader = datamodule.train_dataloader() if dataset is None else DataLoader(
            dataset, batch_size=args.batch_size, shuffle=True)
        network = torch.nn.Sequential(features, ResNet())
        rows[name] = (feature_pass_seconds(loader, features, args.epochs),
                      train_epoch_seconds(loader, network, args.epochs))

    ours_features, ours_train = rows["cached waveforms + batched mel"]
    print(f"{'pipeline':<34}{'features (s)':>13}{'ratio':>7}{'train epoch (s)':>17}{'ratio':>7}")
    for name, (features_seconds, train_seconds) in rows.items():
        print(f"{name:<34}{features_seconds:>13.2f}{features_seconds / ours_features:>6.1f}x"
              f"{train_seconds:>17.2f}{train_seconds / ours_train:>6.2f}x")
    print("ratio = that pipeline's time / the cached pipeline's time (higher: the cached one is faster)")


if __name__ == "__main__":
    main()
