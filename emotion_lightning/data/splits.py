"""Split protocols: which manifest rows are train, val and test.

Each protocol is a small object with `assign(manifest) -> array of 'train'/'val'/'test'/'unused'`,
built from `conf/split/*.yaml`. Speaker-independent protocols are checked for leakage before anything trains.
"""

from pathlib import Path

import numpy as np
import pandas as pd

from emotion_lightning.data.errors import MissingFileError, SettingError
from sklearn.model_selection import train_test_split

PARTS = ("train", "val", "test")


class RandomSplit:
    """Stratified random split of clips (the seeds' 80/10/10). Speakers leak across parts: optimistic."""

    speaker_disjoint = False

    def __init__(self, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0,
                 stratify_by: tuple[str, ...] = ("corpus", "emotion")):
        if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
            raise SettingError(
                f"split: val_fraction={val_fraction}, test_fraction={test_fraction}; both must be in (0, 1) "
                "and sum to less than 1"
            )
        self.val_fraction, self.test_fraction, self.seed = val_fraction, test_fraction, seed
        self.stratify_by = list(stratify_by)

    def assign(self, manifest: pd.DataFrame) -> np.ndarray:
        strata = manifest[self.stratify_by].astype(str).agg("|".join, axis=1).to_numpy()
        rows = np.arange(len(manifest))
        held_out = self.val_fraction + self.test_fraction
        try:
            train, rest = train_test_split(rows, test_size=held_out, stratify=strata, random_state=self.seed)
            val, test = train_test_split(
                rest, test_size=self.test_fraction / held_out, stratify=strata[rest], random_state=self.seed
            )
        except ValueError as error:
            raise SettingError(
                f"split=random cannot stratify {len(rows)} clips by {self.stratify_by}: {error}. "
                "Use more data or lower split.stratify_by."
            ) from None
        assignment = np.empty(len(rows), dtype=object)
        assignment[train], assignment[val], assignment[test] = "train", "val", "test"
        return assignment


def shuffled_speakers_by_gender(rows: pd.DataFrame, rng: np.random.Generator) -> list[list[str]]:
    """The speakers of `rows`, one shuffled list per gender (genders in sorted order)."""
    speakers = rows.drop_duplicates("speaker").sort_values("speaker")
    return [[str(s) for s in rng.permutation(group["speaker"].to_numpy())] for _, group in speakers.groupby("gender")]


def gender_interleaved_speakers(rows: pd.DataFrame, rng: np.random.Generator) -> list[str]:
    """Shuffled speakers with genders interleaved (F, M, F, M, ...): any prefix is gender-balanced."""
    by_gender = shuffled_speakers_by_gender(rows, rng)
    return [s for rank in range(max(map(len, by_gender))) for group in by_gender for s in group[rank:rank + 1]]


def assign_speakers(manifest: pd.DataFrame, val: set[str], test: set[str]) -> np.ndarray:
    """'test' for clips of `test` speakers, 'val' for `val` speakers, 'train' for the rest."""
    unknown = (val | test) - set(manifest["speaker"])
    if unknown:
        raise SettingError(f"split: speakers {sorted(unknown)} are not in the manifest; ids look like "
                           f"{manifest['speaker'].iloc[0]!r}")
    if val & test:
        raise SettingError(f"split: speakers {sorted(val & test)} are in both val and test")
    speaker = manifest["speaker"]
    return np.where(speaker.isin(test), "test", np.where(speaker.isin(val), "val", "train")).astype(object)


class SpeakerIndependentSplit:
    """Whole speakers held out for val and test, chosen per corpus with genders alternating.

    `val_speakers`/`test_speakers` fix the held-out speakers explicitly (ids as in the manifest, e.g.
    'ravdess:03'); otherwise `round(fraction * speakers)` of each corpus are drawn with `seed`.
    """

    speaker_disjoint = True

    def __init__(self, val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0,
                 val_speakers: list[str] | None = None, test_speakers: list[str] | None = None):
        self.val_fraction, self.test_fraction, self.seed = val_fraction, test_fraction, seed
        self.val_speakers = list(val_speakers) if val_speakers else None
        self.test_speakers = list(test_speakers) if test_speakers else None

    def _draw(self, manifest: pd.DataFrame) -> tuple[set[str], set[str]]:
        rng = np.random.default_rng(self.seed)
        val, test = set(), set()
        for corpus, rows in manifest.groupby("corpus", sort=True):
            order = gender_interleaved_speakers(rows, rng)
            if len(order) < 3:
                raise SettingError(
                    f"split=speaker_independent: corpus {corpus} has {len(order)} speaker(s); at least 3 are "
                    "needed for speaker-disjoint train/val/test. Set split.val_speakers and split.test_speakers, "
                    "or use split=random."
                )
            n_test = max(1, round(self.test_fraction * len(order)))
            n_val = max(1, round(self.val_fraction * len(order)))
            if n_test + n_val >= len(order):
                raise SettingError(f"split=speaker_independent: fractions leave no training speaker in {corpus}")
            test.update(order[:n_test])
            val.update(order[n_test:n_test + n_val])
        return val, test

    def assign(self, manifest: pd.DataFrame) -> np.ndarray:
        val, test = self._draw(manifest)
        val = set(self.val_speakers) if self.val_speakers is not None else val
        test = set(self.test_speakers) if self.test_speakers is not None else test
        return assign_speakers(manifest, val, test)


class SpeakerKFoldSplit:
    """k folds of speaker groups per corpus: fold `fold` is test, the next fold is val, the rest train.

    Speakers are dealt round-robin to folds, one gender after the other, so folds are gender-balanced
    (RAVDESS, k=6: six folds of 2 female + 2 male actors). k equal to the number of speakers is
    leave-one-speaker-out. Over folds 0..k-1 every clip is tested exactly once.
    """

    speaker_disjoint = True

    def __init__(self, k: int = 6, fold: int = 0, seed: int = 0):
        if k < 3:
            raise SettingError(f"split.k={k}: speaker k-fold needs k >= 3 (test, val and train folds)")
        if not 0 <= fold < k:
            raise SettingError(f"split.fold={fold} is outside 0..{k - 1} for split.k={k}")
        self.k, self.fold, self.seed = k, fold, seed

    def folds(self, manifest: pd.DataFrame) -> dict[str, int]:
        """Speaker -> fold index."""
        rng = np.random.default_rng(self.seed)
        fold_of = {}
        for corpus, rows in manifest.groupby("corpus", sort=True):
            # Dealing one gender after the other, round-robin, spreads each gender evenly over the folds.
            order = [s for group in shuffled_speakers_by_gender(rows, rng) for s in group]
            if len(order) < self.k:
                raise SettingError(f"split=speaker_kfold: corpus {corpus} has {len(order)} speakers, fewer than "
                                   f"split.k={self.k}; lower split.k")
            fold_of.update({speaker: i % self.k for i, speaker in enumerate(order)})
        return fold_of

    def assign(self, manifest: pd.DataFrame) -> np.ndarray:
        fold_of = self.folds(manifest)
        val_fold = (self.fold + 1) % self.k
        test = {s for s, f in fold_of.items() if f == self.fold}
        val = {s for s, f in fold_of.items() if f == val_fold}
        return assign_speakers(manifest, val, test)


class CrossCorpusSplit:
    """Train (and validate, on held-out speakers) on some corpora; test on all clips of others."""

    speaker_disjoint = True
    test_may_lack_classes = True  # e.g. RAVDESS's calm and surprised do not exist in CREMA-D

    def __init__(self, train_corpora: list[str], test_corpora: list[str], val_fraction: float = 0.15,
                 seed: int = 0):
        overlap = set(train_corpora) & set(test_corpora)
        if overlap:
            raise SettingError(f"split=cross_corpus: {sorted(overlap)} is in both train_corpora and test_corpora")
        self.train_corpora, self.test_corpora = list(train_corpora), list(test_corpora)
        self.val_fraction, self.seed = val_fraction, seed

    def assign(self, manifest: pd.DataFrame) -> np.ndarray:
        present = set(manifest["corpus"])
        missing = sorted(set(self.train_corpora + self.test_corpora) - present)
        if missing:
            raise SettingError(f"split=cross_corpus: corpora {missing} have no clips; use data=combined with "
                               f"data.include listing {self.train_corpora + self.test_corpora}")
        rng = np.random.default_rng(self.seed)
        val = set()
        for corpus in self.train_corpora:
            order = gender_interleaved_speakers(manifest[manifest["corpus"] == corpus], rng)
            if len(order) > 1:  # a one-speaker corpus can only train
                val.update(order[:max(1, round(self.val_fraction * len(order)))])
        test = set(manifest["speaker"][manifest["corpus"].isin(self.test_corpora)])
        assignment = assign_speakers(manifest, val, test)
        assignment[~manifest["corpus"].isin(self.train_corpora + self.test_corpora).to_numpy()] = "unused"
        return assignment


class FileSplit:
    """Membership read from a user's file (CSV with columns `file,part` or JSON lines with those keys),
    e.g. a published benchmark partition. `file` is matched against the end of each clip's path, so a
    bare name, `Actor_01/03-01-...wav` or a full path all work; part is train, val or test. Clips the file
    does not list are left out; a listed file missing from the data is an error."""

    speaker_disjoint = False

    def __init__(self, path: str, check_speakers: bool = False):
        self.path = Path(path)
        self.speaker_disjoint = check_speakers

    def read(self) -> pd.DataFrame:
        if not self.path.is_file():
            raise MissingFileError(f"split.path={self.path} does not exist; give a CSV (file,part) or JSON-lines file")
        if self.path.suffix.lower() in (".jsonl", ".json"):
            table = pd.read_json(self.path, lines=True, dtype=str)
        else:
            table = pd.read_csv(self.path, dtype=str, keep_default_na=False)
        if not {"file", "part"} <= set(table.columns):
            raise SettingError(f"{self.path}: needs columns 'file' and 'part', found {list(table.columns)}")
        bad = sorted(set(table["part"]) - set(PARTS))
        if bad:
            raise SettingError(f"{self.path}: part values {bad} are not train, val or test")
        return table

    def assign(self, manifest: pd.DataFrame) -> np.ndarray:
        table = self.read()
        paths = manifest["path"].map(lambda p: Path(p).as_posix())
        by_suffix: dict[str, list[int]] = {}
        for row, path in enumerate(paths):
            parts = path.split("/")
            for depth in range(1, len(parts) + 1):
                by_suffix.setdefault("/".join(parts[-depth:]), []).append(row)
        assignment = np.full(len(manifest), "unused", dtype=object)
        missing, ambiguous = [], []
        for entry, part in zip(table["file"], table["part"]):
            rows = by_suffix.get(Path(entry).as_posix().lstrip("./"), [])
            if not rows:
                missing.append(entry)
            elif len(rows) > 1:
                ambiguous.append(entry)
            else:
                assignment[rows[0]] = part
        if missing:
            raise SettingError(f"{self.path}: {len(missing)} listed file(s) are not in the data, e.g. {missing[:5]}; "
                               "check paths.data_dir and the file names")
        if ambiguous:
            raise SettingError(f"{self.path}: {ambiguous[:5]} match several clips; list a longer part of the path")
        return assignment


def check_speaker_disjoint(manifest: pd.DataFrame, assignment: np.ndarray) -> None:
    """Raise if any speaker has clips in more than one part (leakage), naming the speakers."""
    used = assignment != "unused"
    parts_per_speaker = pd.Series(assignment[used]).groupby(manifest["speaker"].to_numpy()[used]).nunique()
    leaking = sorted(parts_per_speaker[parts_per_speaker > 1].index)
    if leaking:
        raise SettingError(f"speaker leakage: {leaking} appear in more than one of train/val/test")


def summary(manifest: pd.DataFrame, assignment: np.ndarray) -> pd.DataFrame:
    """Clips per corpus, emotion and part: the table written to every run dir."""
    table = manifest.assign(part=assignment).pivot_table(
        index=["corpus", "emotion"], columns="part", values="path", aggfunc="count", fill_value=0
    )
    return table.reindex(columns=[p for p in PARTS if p in table.columns]).reset_index()
