"""The LightningDataModule: manifest -> split -> waveform cache -> fixed-length clips in batches."""

import logging
import os
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from emotion_lightning.data.array_store import ArrayStore
from emotion_lightning.data.codec_variants import codec_variants
from emotion_lightning.data.corpora import Corpus
from emotion_lightning.data.download import manual_steps
from emotion_lightning.data.errors import MissingFileError, SettingError
from emotion_lightning.data.manifest import load_manifest
from emotion_lightning.data.splits import PARTS, check_speaker_disjoint, clip_keys
from emotion_lightning.data.transforms import Chain, ClipContext, Codec
from emotion_lightning.data.waveform_cache import WaveformCache

log = logging.getLogger(__name__)


def free_memory(device: torch.device) -> int:
    """Bytes free on `device`: CUDA's free memory, or the host's MemAvailable for the CPU."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as meminfo:
            return next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


class DataNotFoundError(MissingFileError):
    """No audio of any configured corpus was found; the message says where to put it."""


def crop_starts(lengths: np.ndarray, crop_length: int, random_crop: bool, crops: int = 1) -> np.ndarray:
    """Where each clip's crop begins: uniform over the clip in training (one draw per batch from torch's
    generator, so both data paths and a resumed run cut the same crops), the centre in evaluation, 0 when
    the clip is shorter than the crop (it is zero-padded at the end). `crops` > 1 (evaluation only): that
    many starts per clip, evenly spaced from its beginning to its end, shape (clips, crops)."""
    excess = np.maximum(np.asarray(lengths, dtype=np.int64) - crop_length, 0)
    if crops > 1:
        return np.rint(excess[:, None] * np.linspace(0, 1, crops)[None]).astype(np.int64)
    if not random_crop:
        return excess // 2
    uniform = torch.rand(len(excess), dtype=torch.float64).numpy()
    return np.minimum((uniform * (excess + 1)).astype(np.int64), excess)


def batch_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """The dtype batches have on `device`: a CPU converts float16 to float32 at a fraction of a GPU's speed
    (it took as long as the rest of a frozen encoder's training step), so float16 stores are widened once, on
    loading, when the batches stay on the CPU."""
    return torch.float32 if dtype == torch.float16 and device.type == "cpu" else dtype


def keep_batch(batch):
    """The DataLoader's collate step for datasets that build whole batches themselves (`__getitems__`)."""
    return batch


class StoreStack:
    """Several stores as one row space, in order: the clean clips, then (for training) their codec variants."""

    def __init__(self, stores: list[ArrayStore]):
        self.stores = list(stores)
        self.first_rows = np.cumsum([0] + [len(store) for store in self.stores])
        self.lengths = np.concatenate([store.lengths for store in self.stores])
        self.item_shape = self.stores[0].item_shape

    def __getitem__(self, row: int) -> np.ndarray:
        which = int(np.searchsorted(self.first_rows, row, side="right")) - 1
        return self.stores[which][row - self.first_rows[which]]

    @property
    def nbytes(self) -> int:
        return sum(store.nbytes for store in self.stores)

    @property
    def dtype(self) -> torch.dtype:
        return torch.from_numpy(self.stores[0].data[:0]).dtype


class ResidentRows:
    """A StoreStack copied whole into one tensor on `device`: a batch is one gather, no per-item loop.

    `tail` zero rows follow the last clip, so a crop of up to `tail` rows never reads past the end. Waveform
    crops (1-D rows) are taken from a strided view of every window of the crop's length (`unfold`, no copy), so the
    gather copies whole contiguous crops: indexing each sample on its own took half the network's time on CPU."""

    def __init__(self, stack: StoreStack, device: torch.device, tail: int):
        total = sum(len(store.data) for store in stack.stores)
        self.flat = torch.zeros((total + tail, *stack.item_shape), dtype=batch_dtype(stack.dtype, device), device=device)
        offsets, position = [], 0
        for store in stack.stores:
            self.flat[position:position + len(store.data)].copy_(torch.from_numpy(np.asarray(store.data)))
            offsets.append(store.offsets + position)
            position += len(store.data)
        self.offsets = torch.from_numpy(np.concatenate(offsets)).to(device)
        self.lengths = torch.from_numpy(stack.lengths).to(device)
        self.device, self.tail = device, tail

    def gather(self, rows: np.ndarray, starts: np.ndarray, crop_length: int) -> torch.Tensor:
        if crop_length > self.tail:
            raise ValueError(f"crops of {crop_length} rows need as many zero rows after the data (have {self.tail})")
        rows, starts = torch.from_numpy(rows).to(self.device), torch.from_numpy(starts).to(self.device)
        begin = self.offsets[rows] + starts
        positions = torch.arange(crop_length, device=self.device)
        if self.flat.dim() == 1:
            clips = self.flat.unfold(0, crop_length, 1)[begin]  # (batch, crop)
        else:
            clips = self.flat[begin[:, None] + positions]  # (batch, crop, *item): rows are long enough already
        inside = starts[:, None] + positions < self.lengths[rows][:, None]
        return torch.where(inside.view(*inside.shape, *[1] * (clips.dim() - 2)), clips, 0)  # zero padding at the end


class ResidentCropMeans:
    """A StoreStack's rows as per-clip prefix sums (float32) on `device`, for a model that only averages each crop
    over its rows (a frozen encoder's mean-pooling head): a crop's mean is the difference of two gathered prefix
    rows over `crop_length`, rows past the clip's end counting as the zeros `ClipDataset.cut` pads with. Batches
    are (batch, 1, *item), the same mean the head would take of the whole crop, without copying its frames (that
    copy was most of a cached epoch). The sums restart at every clip, so float32 keeps their differences precise."""

    @staticmethod
    def rows_for(stack: StoreStack) -> int:
        """Prefix rows of `stack`: a zero row, then one per frame, for every clip."""
        return int(stack.lengths.sum()) + len(stack.lengths)

    def __init__(self, stack: StoreStack, device: torch.device):
        lengths = stack.lengths.astype(np.int64)
        self.base = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]])  # clip i's zero row, then its sums
        prefix = torch.zeros((self.rows_for(stack), *stack.item_shape), dtype=torch.float32)
        for row, (base, length) in enumerate(zip(self.base, lengths)):
            prefix[base + 1:base + 1 + length].copy_(torch.from_numpy(np.asarray(stack[row])))
            prefix[base + 1:base + 1 + length].cumsum_(dim=0)  # in place: as fast as the copy alone
        self.prefix = prefix.to(device)
        self.base, self.lengths = torch.from_numpy(self.base).to(device), torch.from_numpy(lengths).to(device)
        self.device = device

    def gather(self, rows: np.ndarray, starts: np.ndarray, crop_length: int) -> torch.Tensor:
        rows, starts = torch.from_numpy(rows).to(self.device), torch.from_numpy(starts).to(self.device)
        base, ends = self.base[rows], torch.minimum(starts + crop_length, self.lengths[rows])
        return ((self.prefix[base + ends] - self.prefix[base + starts]) / crop_length).unsqueeze(1)


class ClipDataset(Dataset):
    """Fixed-length crops of a store's rows (waveforms, or a frozen encoder's frames): a random crop for
    training, the centre for evaluation, zero padding (at the end) for rows shorter than `crop_length`.

    Batches are cut whole (`__getitems__`): from the memory map row by row, or, once `resident` is set, by one
    gather on the device. `transform` (a robustness Chain) degrades each test clip after cropping, seeded per
    clip by `transform_seed`, so a condition's score is the same run to run. `variants` = (count, p): with
    probability p a training clip is read from one of its `count` codec variants (rows after the clean ones).
    `crops` > 1 (test-time augmentation, evaluation parts only): each item is that many evenly spaced crops of
    the clip, (crops, crop_length), which the model scores one by one and averages. `crop_means`: each crop is
    replaced by its mean over the rows, (1, *item) (for a head that only averages over time; resident as
    `ResidentCropMeans`).
    """

    def __init__(self, store: ArrayStore | StoreStack, rows: np.ndarray, labels: np.ndarray, crop_length: int,
                 random_crop: bool, transform: Chain | None = None, transform_seed: int = 0,
                 sample_rate: int = 16000, variants: tuple[int, float] | None = None, crops: int = 1,
                 crop_means: bool = False):
        if crops < 1 or (crops > 1 and random_crop):
            raise SettingError(f"data.test_crops={crops}: evaluation takes 1 or more evenly spaced crops per clip")
        if crop_means and (transform or crops > 1):
            raise ValueError("crop means serve the cached encoder frames of training and validation (one crop per "
                             "clip, no test condition)")
        self.crops, self.crop_means = int(crops), crop_means
        self.stack = store if isinstance(store, StoreStack) else StoreStack([store])
        self.rows, self.labels = np.asarray(rows, dtype=np.int64), np.asarray(labels, dtype=np.int64)
        self.crop_length, self.random_crop = crop_length, random_crop
        self.transform, self.transform_seed, self.sample_rate = transform, transform_seed, sample_rate
        self.variants = variants
        self.resident: ResidentRows | ResidentCropMeans | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def make_resident(self, rows: ResidentRows | ResidentCropMeans) -> None:
        if self.transform:
            raise ValueError("a test condition degrades clips one by one; its dataset cannot be resident")
        if isinstance(rows, ResidentCropMeans) != self.crop_means:
            raise ValueError("crop means come from ResidentCropMeans, whole crops from ResidentRows")
        self.resident = rows

    def cut(self, row: np.ndarray, start: int) -> np.ndarray:
        piece = np.array(row[start:start + self.crop_length])
        if self.crop_means:  # the mean ResidentCropMeans gives: padding zeros add nothing but count
            return (piece.sum(axis=0, dtype=np.float64, keepdims=True) / self.crop_length).astype(np.float32)
        if len(piece) < self.crop_length:
            piece = np.pad(piece, [(0, self.crop_length - len(piece))] + [(0, 0)] * (piece.ndim - 1))
        return piece

    def crop(self, waveform: np.ndarray, random_crop: bool, rng: np.random.Generator) -> np.ndarray:
        """One crop drawn from a numpy generator (the seeded voices of a test condition's babble)."""
        excess = len(waveform) - self.crop_length
        start = int(rng.integers(excess + 1)) if random_crop and excess >= 0 else max(excess, 0) // 2
        return self.cut(waveform, start)

    def other_clips(self, index: int, rng: np.random.Generator, count: int) -> list[np.ndarray]:
        """`count` random crops of other clips of this dataset (the voices of babble noise)."""
        others = np.delete(np.arange(len(self)), index)
        chosen = rng.choice(others, size=min(count, len(others)), replace=False)
        return [self.crop(self.stack[self.rows[i]], random_crop=True, rng=rng) for i in chosen]

    def source_rows(self, indices: np.ndarray) -> np.ndarray:
        rows = self.rows[indices]
        if not self.variants:
            return rows
        count, p = self.variants
        use, which = torch.rand(len(rows)) < p, torch.randint(count, (len(rows),))
        variant_rows = self.stack.first_rows[1] + rows * count + which.numpy()
        return np.where(use.numpy(), variant_rows, rows)

    def __getitems__(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        indices = np.asarray(indices, dtype=np.int64)
        rows = self.source_rows(indices)
        starts = crop_starts(self.stack.lengths[rows], self.crop_length, self.random_crop, self.crops)
        if self.crops > 1:  # one row per crop, grouped back per clip at the end
            rows, starts, indices = np.repeat(rows, self.crops), starts.reshape(-1), np.repeat(indices, self.crops)
        if self.resident is not None:
            clips = self.resident.gather(rows, starts, self.crop_length)
        else:
            clips = [self.cut(self.stack[row], start) for row, start in zip(rows, starts)]
            if self.transform:
                clips = [self.degrade(clip, index) for clip, index in zip(clips, indices)]
            clips = torch.from_numpy(np.stack(clips))
            clips = clips.to(batch_dtype(clips.dtype, torch.device("cpu")))
        labels = torch.from_numpy(self.labels[indices[::self.crops]])
        if self.crops > 1:
            clips = clips.unflatten(0, (-1, self.crops))
        return clips, labels.to(clips.device)

    def degrade(self, clip: np.ndarray, index: int) -> np.ndarray:
        """`clip` (item `index`'s crop, or its whole clip) under the test condition, seeded per clip; babble's
        voices (crops of other clips) are tiled to the clip's length."""
        rng = np.random.default_rng((self.transform_seed, int(self.rows[index])))
        context = ClipContext(self.sample_rate, lambda r, n: [np.resize(voice, len(clip))
                                                              for voice in self.other_clips(index, r, n)])
        return np.ascontiguousarray(self.transform(clip, rng, context), dtype=np.float32)

    def degraded_whole(self, index: int) -> np.ndarray:
        """Item `index`'s whole clip (not a crop) under the test condition: for models that describe whole clips
        (models/classical.py)."""
        clip = np.asarray(self.stack[self.rows[index]], dtype=np.float32)
        return self.degrade(clip, index) if self.transform else clip

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        clips, labels = self.__getitems__([index])
        return clips[0], int(labels[0])


class EmotionDataModule(L.LightningDataModule):
    """Clips of one or more corpora, labelled with the unified taxonomy and split by a protocol.

    `corpora` maps a name to a Corpus (see conf/corpus/); `include` keeps a subset of them; `classes`
    lists the label set (its order is the model's output order). `test_transform` is the robustness condition
    of the test clips, seeded per clip by `test_transform_seed` (validation stays clean: model selection does
    not see the condition). `train_codec` (a Codec with `p`) reads training clips from a cache of their codec
    variants; the other waveform augmentation runs on whole batches inside the model (models/augment.py).

    `resident` (auto | true | false): keep the decoded rows in the memory of the trainer's device and cut
    batches by one gather; `auto` does so when they take at most `resident_fraction` of the device's free
    memory (GPU: free CUDA memory; CPU: MemAvailable) and there are no worker processes.

    `test_crops` > 1: each test clip is scored on that many evenly spaced crops and their probabilities are
    averaged (test-time augmentation); 1 (default) is the centre crop.
    """

    def __init__(self, corpora: dict[str, Corpus], classes: list[str], split, sample_rate: int = 16000,
                 clip_seconds: float = 3.0, batch_size: int = 32, num_workers: int = 0,
                 cache_dir: str = "cache", include: list[str] | None = None, train_codec: Codec | None = None,
                 test_transform: Chain | None = None, test_transform_seed: int = 0, resident: str | bool = "auto",
                 resident_fraction: float = 0.25, test_crops: int = 1):
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
        if resident not in ("auto", True, False):
            raise ValueError(f"data.resident={resident!r}; use auto, true or false")
        if resident is True and num_workers > 0:
            raise ValueError("data.resident=true keeps batches on the device, which worker processes cannot share; "
                             "set data.num_workers=0 or data.resident=false")
        self.resident, self.resident_fraction = resident, resident_fraction
        self.test_crops = test_crops
        self.train_codec = train_codec
        self.test_transform, self.test_transform_seed = test_transform, test_transform_seed
        # by the stack's id (the stack kept alive with it) and whether crops are averaged
        self._resident_rows: dict[tuple[int, bool], tuple[StoreStack, ResidentRows | ResidentCropMeans]] = {}
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
            "EMOTION_DATA_DIR=/path/to/data (or paths.data_dir=...)."
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
        # by the cache's resolved paths (row-aligned with the manifest): per-file symlinks (DVC, git-annex) match too
        usable = ~pd.Series(cache.paths).isin(cache.failed).to_numpy()
        cache_rows = np.flatnonzero(usable)
        manifest = manifest[usable].reset_index(drop=True)

        assignment = self.split.assign(manifest)
        if self.split.speaker_disjoint:
            check_speaker_disjoint(manifest, assignment)
        used = assignment != "unused"  # e.g. clips a file split does not list
        manifest, assignment, cache_rows = manifest[used].reset_index(drop=True), assignment[used], cache_rows[used]
        labels = manifest["emotion"].map({name: i for i, name in enumerate(self.classes)}).to_numpy()
        stack, variants = StoreStack([cache]), None  # one row space for every part, so one resident copy
        if self.train_codec is not None:
            codec = codec_variants(cache, self.sample_rate, self.train_codec, self.cache_dir)
            stack, variants = StoreStack([cache, codec]), (len(codec) // len(cache), self.train_codec.p)
        for part in PARTS:
            selected = assignment == part
            if not selected.any():
                raise SettingError(f"split leaves no {part} clips; check the split settings")
            train, test = part == "train", part == "test"
            self.datasets[part] = ClipDataset(
                stack, cache_rows[selected], labels[selected], self.num_samples,
                random_crop=train, transform=self.test_transform if test else None,
                transform_seed=self.test_transform_seed, sample_rate=self.sample_rate,
                variants=variants if train else None, crops=self.test_crops if test else 1)
        self._check_test_classes(manifest, assignment)
        self.manifest, self.assignment, self.skipped, self.cache = manifest, assignment, skipped, cache

    def _check_test_classes(self, manifest: pd.DataFrame, assignment: np.ndarray) -> None:
        """A class trained on but never tested makes UA and macro-F1 silently skip it: refuse, unless the
        protocol tests on other corpora (cross-corpus), where missing classes are expected. A class tested but
        never trained on scores 0 by construction: always refused."""
        in_train = set(manifest["emotion"][assignment == "train"])
        in_test = set(manifest["emotion"][assignment == "test"])
        untested = [c for c in self.classes if c in in_train and c not in in_test]
        if untested and not getattr(self.split, "test_may_lack_classes", False):
            raise SettingError(
                f"the split leaves classes {untested} with training clips but no test clip; hold out more "
                "speakers (split.test_fraction), pick another split.seed, or drop them from data.classes"
            )
        unlearned = [c for c in self.classes if c in in_test and c not in in_train]
        if unlearned:  # e.g. RAVDESS's calm and surprised when training on CREMA-D: recall 0 by construction
            shared = [c for c in self.classes if c in in_train and c in in_test]
            raise SettingError(
                f"the split tests classes {unlearned} that have no training clip: the model can never predict them, "
                f"and UA would count each as 0; keep the classes both sides have: data.classes=[{','.join(shared)}]")
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
        return clip_keys(rows["corpus"], self.clip_files(rows))

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

    def use_features(self, store: ArrayStore, crop_length: int, parts=("train", "val"), crop_means: bool = False) -> None:
        """Read `parts` from `store` (a frozen encoder's frames, row-aligned with the waveform cache) instead of
        the waveforms, cropping `crop_length` frames (`crop_means`: each crop's mean over its frames, for a head
        that only averages over time). The test part stays on audio, so a run's test scores are the ones `eval`
        gives its checkpoint (and robustness conditions degrade real audio)."""
        stack = StoreStack([store])  # one row space for the parts, so one resident copy
        for part in parts:
            dataset = self.datasets[part]
            self.datasets[part] = ClipDataset(stack, dataset.rows, dataset.labels, crop_length,
                                              random_crop=dataset.random_crop, sample_rate=self.sample_rate,
                                              crop_means=crop_means)

    def device(self) -> torch.device:
        return self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")

    def fits_on(self, nbytes: int, device: torch.device) -> bool:
        """The resident rule: the rows take at most `resident_fraction` of the device's free memory."""
        return nbytes <= self.resident_fraction * free_memory(device)

    def _place(self, dataset: ClipDataset) -> None:
        """Make `dataset` resident on the trainer's device when `data.resident` says so (see the class doc)."""
        if self.resident is False or dataset.resident is not None or dataset.transform:
            return
        device, stack = self.device(), dataset.stack
        if dataset.crop_means:  # float32 prefix sums
            nbytes = ResidentCropMeans.rows_for(stack) * int(np.prod(stack.item_shape)) * 4
        else:  # float16 is widened on a CPU
            nbytes = stack.nbytes * batch_dtype(stack.dtype, device).itemsize // stack.dtype.itemsize
        if self.resident == "auto" and (self.num_workers > 0 or not self.fits_on(nbytes, device)):
            return
        key = (id(stack), dataset.crop_means)
        if key not in self._resident_rows:
            log.info("data resident on %s: %.1f MB%s", device, nbytes * 1e-6, " (crop-mean prefix sums)" * dataset.crop_means)
            rows = ResidentCropMeans(stack, device) if dataset.crop_means else ResidentRows(stack, device, dataset.crop_length)
            self._resident_rows[key] = (stack, rows)
        dataset.make_resident(self._resident_rows[key][1])

    def _loader(self, part: str) -> DataLoader:
        dataset = self.datasets[part]
        self._place(dataset)
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=part == "train", collate_fn=keep_batch,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
