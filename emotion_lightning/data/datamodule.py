"""The LightningDataModule: manifest -> split -> waveform cache -> fixed-length clips in batches."""

import logging
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from emotion_lightning.data.corpora import Corpus
from emotion_lightning.data.download import manual_steps
from emotion_lightning.data.errors import MissingFileError, SettingError
from emotion_lightning.data.manifest import load_manifest
from emotion_lightning.data.splits import PARTS, check_speaker_disjoint
from emotion_lightning.data.waveform_cache import WaveformCache
from emotion_lightning.data.transforms import Chain, ClipContext

log = logging.getLogger(__name__)


class DataNotFoundError(MissingFileError):
    """No audio of any configured corpus was found; the message says where to put it."""


class ClipDataset(Dataset):
    """Fixed-length clips sliced from the waveform cache: a random crop for training, the centre for
    evaluation, zero padding (at the end) for clips shorter than `num_samples`.

    `transform` (a robustness.Chain) degrades each clip after cropping. With `transform_seed` set (test
    conditions), clip i always gets the same degradation; without it (augmentation), draws come from
    torch's global generator, so they follow `seed` and resume exactly from a checkpoint.
    """

    def __init__(self, cache: WaveformCache, cache_rows: np.ndarray, labels: np.ndarray, num_samples: int,
                 random_crop: bool, transform: Chain | None = None, transform_seed: int | None = None):
        self.cache, self.cache_rows, self.labels = cache, cache_rows, labels
        self.num_samples, self.random_crop = num_samples, random_crop
        self.transform, self.transform_seed = transform, transform_seed

    def __len__(self) -> int:
        return len(self.labels)

    def crop(self, waveform: np.ndarray, random_crop: bool, rng: np.random.Generator | None = None) -> np.ndarray:
        excess = len(waveform) - self.num_samples
        if excess < 0:
            return np.pad(waveform, (0, -excess))
        if not random_crop:
            start = excess // 2
        elif rng is not None:
            start = int(rng.integers(excess + 1))
        else:
            start = int(torch.randint(excess + 1, ()))
        return np.array(waveform[start:start + self.num_samples])

    def other_clips(self, index: int, rng: np.random.Generator, count: int) -> list[np.ndarray]:
        """`count` random crops of other clips of this dataset (the voices of babble noise)."""
        others = np.delete(np.arange(len(self)), index)
        chosen = rng.choice(others, size=min(count, len(others)), replace=False)
        return [self.crop(self.cache[self.cache_rows[i]], random_crop=True, rng=rng) for i in chosen]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        clip = self.crop(self.cache[self.cache_rows[index]], self.random_crop)
        if self.transform:
            seed = (self.transform_seed, int(self.cache_rows[index])) if self.transform_seed is not None \
                else int(torch.randint(2**62, ()))
            rng = np.random.default_rng(seed)
            context = ClipContext(self.cache.sample_rate, lambda r, n: self.other_clips(index, r, n))
            clip = self.transform(clip, rng, context)
        return torch.from_numpy(np.ascontiguousarray(clip, dtype=np.float32)), int(self.labels[index])


class EmotionDataModule(L.LightningDataModule):
    """Clips of one or more corpora, labelled with the unified taxonomy and split by a protocol.

    `corpora` maps a name to a Corpus (see conf/corpus/); `include` keeps a subset of them; `classes`
    lists the label set (its order is the model's output order). `train_transform` augments training clips;
    `test_transform` is the robustness condition of the test clips, seeded per clip by `test_transform_seed`
    (validation stays clean: model selection does not see the condition).
    """

    def __init__(self, corpora: dict[str, Corpus], classes: list[str], split, sample_rate: int = 16000,
                 clip_seconds: float = 3.0, batch_size: int = 32, num_workers: int = 0,
                 cache_dir: str = "cache", include: list[str] | None = None, train_transform: Chain | None = None,
                 test_transform: Chain | None = None, test_transform_seed: int = 0):
        super().__init__()
        unknown = sorted(set(include or []) - set(corpora))
        if unknown:
            raise SettingError(f"data.include names {unknown}; available corpora are {sorted(corpora)}")
        self.corpora = [corpora[name] for name in (include or corpora)]
        self.classes = list(classes)
        self.split = split
        self.sample_rate, self.num_samples = sample_rate, int(round(clip_seconds * sample_rate))
        self.batch_size, self.num_workers = batch_size, num_workers
        self.cache_dir = Path(cache_dir)
        self.transforms = {"train": (train_transform, None), "test": (test_transform, test_transform_seed)}
        self.manifest: pd.DataFrame | None = None
        self.datasets: dict[str, ClipDataset] = {}

    def _check_data_present(self) -> None:
        if any(corpus.audio_files() for corpus in self.corpora):
            return
        wanted = "\n".join(
            f"  - {c.name}: expected under {c.root}; install it there with `emotion-lightning download {c.name} "
            f"paths.data_dir={c.root.parent}`, or by hand: {manual_steps(c.name, c.root)}" for c in self.corpora)
        raise DataNotFoundError(
            "No audio found for any configured corpus.\n" + wanted + "\nOr point the data directory at a copy with "
            "EMOTION_DATA_DIR=/path/to/data (or paths.data_dir=...); on this project's machines the real "
            "RAVDESS is at ../shared/data."
        )

    def setup(self, stage: str | None = None) -> None:
        if self.manifest is not None:
            return
        self._check_data_present()
        manifest, skipped = load_manifest(self.corpora, self.cache_dir)
        for row in skipped.itertuples():
            log.warning("skipped %s: %s", row.path, row.reason)
        manifest = manifest[manifest["emotion"].isin(self.classes)].reset_index(drop=True)
        if manifest.empty:
            raise SettingError(f"no clips left after keeping data.classes={self.classes}; check the corpus emotion maps")
        cache = WaveformCache.open_or_build(manifest["path"].tolist(), self.sample_rate, self.cache_dir)
        for path, reason in cache.failed.items():
            log.warning("skipped %s: %s", path, reason)
        usable = ~manifest["path"].isin(cache.failed).to_numpy()
        cache_rows = np.flatnonzero(usable)
        manifest = manifest[usable].reset_index(drop=True)

        assignment = self.split.assign(manifest)
        if self.split.speaker_disjoint:
            check_speaker_disjoint(manifest, assignment)
        used = assignment != "unused"  # e.g. clips a file split does not list
        manifest, assignment, cache_rows = manifest[used].reset_index(drop=True), assignment[used], cache_rows[used]
        labels = manifest["emotion"].map({name: i for i, name in enumerate(self.classes)}).to_numpy()
        for part in PARTS:
            selected = assignment == part
            if not selected.any():
                raise SettingError(f"split leaves no {part} clips; check the split settings")
            transform, transform_seed = self.transforms.get(part, (None, None))
            self.datasets[part] = ClipDataset(cache, cache_rows[selected], labels[selected], self.num_samples,
                                              random_crop=part == "train", transform=transform,
                                              transform_seed=transform_seed)
        self._check_test_classes(manifest, assignment)
        self.manifest, self.assignment, self.skipped, self.cache = manifest, assignment, skipped, cache

    def _check_test_classes(self, manifest: pd.DataFrame, assignment: np.ndarray) -> None:
        """A class trained on but never tested makes UA and macro-F1 silently skip it: refuse, unless the
        protocol tests on other corpora (cross-corpus), where missing classes are expected."""
        in_train = set(manifest["emotion"][assignment == "train"])
        in_test = set(manifest["emotion"][assignment == "test"])
        untested = [c for c in self.classes if c in in_train and c not in in_test]
        if untested and not getattr(self.split, "test_may_lack_classes", False):
            raise SettingError(
                f"the split leaves classes {untested} with training clips but no test clip; hold out more "
                "speakers (split.test_fraction), pick another split.seed, or drop them from data.classes"
            )
        absent = [c for c in self.classes if c not in in_test]
        if absent:
            log.warning("classes %s have no test clip; UA and macro-F1 average over the classes present", absent)

    def rows(self, part: str) -> pd.DataFrame:
        """Manifest rows of one part, in the order its dataloader yields them (unshuffled for val/test)."""
        return self.manifest[self.assignment == part]

    def clip_files(self, rows: pd.DataFrame) -> pd.Series:
        """Each clip's path relative to its corpus root (posix): the same on any machine that holds the corpus,
        and a path ending that `split=file` matches."""
        roots = {corpus.name: corpus.root for corpus in self.corpora}
        return pd.Series([Path(path).relative_to(roots[corpus]).as_posix()
                          for path, corpus in zip(rows["path"], rows["corpus"])], index=rows.index, dtype=object)

    def clip_ids(self, part: str) -> list[str]:
        """IDs (`corpus:relative/path`) of one part's clips: what a checkpoint records of its train and val
        parts, so that eval can tell when a test clip was trained on."""
        rows = self.rows(part)
        return [f"{corpus}:{file}" for corpus, file in zip(rows["corpus"], self.clip_files(rows))]

    def split_table(self) -> pd.DataFrame:
        """One row per clip used (file, corpus, speaker, part): the run's exact partition, in the format
        `split=file` reads back."""
        return pd.DataFrame({"file": self.clip_files(self.manifest).to_numpy(), "corpus": self.manifest["corpus"].to_numpy(),
                             "speaker": self.manifest["speaker"].to_numpy(), "part": self.assignment})

    def class_weights(self) -> torch.Tensor:
        """Inverse-frequency weights of the training labels (mean 1 over the classes present)."""
        counts = np.bincount(self.datasets["train"].labels, minlength=len(self.classes)).astype(np.float64)
        weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / np.count_nonzero(counts), 0.0)
        return torch.tensor(weights, dtype=torch.float32)

    def _loader(self, part: str) -> DataLoader:
        return DataLoader(self.datasets[part], batch_size=self.batch_size, shuffle=part == "train",
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
