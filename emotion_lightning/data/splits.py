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
SPLIT_FILE = "split.csv"  # a run dir's exact partition, clip by clip (DataModule.split_table); `split=file` reads it


class RandomSplit:
    """Stratified random split of clips (the earlier project's 80/10/10). Speakers leak across parts: optimistic."""

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
        """The held-out speakers: the fixed lists as given, the others drawn per corpus from the speakers the
        fixed ones leave (the same draw as with none fixed wherever that draw did not collide with them)."""
        rng = np.random.default_rng(self.seed)
        val, test = set(self.val_speakers or ()), set(self.test_speakers or ())
        if self.val_speakers is not None and self.test_speakers is not None:
            return val, test
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
            if self.test_speakers is None:  # the first n_test of the order, skipping fixed val speakers
                test.update([s for s in order if s not in val][:n_test])
            if self.val_speakers is None:  # the next n_val, skipping test speakers (fixed or drawn)
                val.update([s for s in order[n_test:] + order[:n_test] if s not in test][:n_val])
            if set(order) <= val | test:
                raise SettingError(f"split=speaker_independent: fractions leave no training speaker in {corpus}")
        return val, test

    def assign(self, manifest: pd.DataFrame) -> np.ndarray:
        val, test = self._draw(manifest)
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


class ValidationAsTest:
    """Another split with its val and test parts swapped: `eval part=val` scores a checkpoint on the clips that
    validated it, to choose test-side settings such as `test_crops` on validation, never on test."""

    def __init__(self, split):
        self.split = split
        self.speaker_disjoint = split.speaker_disjoint
        self.test_may_lack_classes = getattr(split, "test_may_lack_classes", False)

    def assign(self, manifest: pd.DataFrame) -> np.ndarray:
        parts = self.split.assign(manifest)
        return np.where(parts == "val", "test", np.where(parts == "test", "val", parts))


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


def clip_keys(corpora, files) -> list[str]:
    """Clip IDs, `corpus:path relative to the corpus root`: what a checkpoint records of its train and val parts,
    and what a split.csv row (its corpus and file) names."""
    return [f"{corpus}:{file}" for corpus, file in zip(corpora, files)]


def clip_id(path: str) -> list[str]:
    """A path's components with the extension dropped from the last: clips are matched on their ID, so a
    listed `x.wav` finds the `x.flac` stored here."""
    parts = Path(str(path)).as_posix().lstrip("./").split("/")
    parts[-1] = Path(parts[-1]).stem
    return parts


class FileSplit:
    """Membership read from files, e.g. a published benchmark partition. Either

    - `path`: one table listing each clip's part (CSV with columns `file,part`, or JSON lines with those
      keys; what every run dir's split.csv holds), or
    - `train`, `test` and optionally `val`: one file per part listing its clips (CSV with a `file` column, or
      JSON lines with `file` or `wav` per line: EmoBox's published fold files as they are). Without a val
      file, val is carved from train by whole speakers (`val_fraction` of each corpus's training speakers,
      genders alternating, drawn with `seed`).

    A listed clip is matched on the end of its path without the extension (the clip's ID), so a bare name,
    `Actor_01/03-01-...wav` or another machine's full path all work; an optional `corpus` column (split.csv's)
    restricts the match to that corpus's clips, other columns (split.csv's speaker) are ignored. Clips not
    listed are left out; a listed clip missing from the data is an error.
    """

    speaker_disjoint = False

    def __init__(self, path: str | None = None, check_speakers: bool = False, train: str | None = None,
                 val: str | None = None, test: str | None = None, val_fraction: float = 0.2, seed: int = 0):
        per_part = {"train": train, "val": val, "test": test}
        if (path is None) == (train is None and test is None):
            raise SettingError("split=file: give split.path (one file with a part column) or split.train and "
                             "split.test (one file per part), not both")
        if path is None and (train is None or test is None):
            raise SettingError("split=file: split.train and split.test are both needed (split.val is optional)")
        if not 0 < val_fraction < 1:
            raise SettingError(f"split.val_fraction={val_fraction} must be in (0, 1)")
        self.path = Path(path) if path else None
        self.part_files = {part: Path(f) for part, f in per_part.items() if f}
        self.val_fraction, self.seed = val_fraction, seed
        self.speaker_disjoint = check_speakers

    @staticmethod
    def _read_table(path: Path, setting: str) -> pd.DataFrame:
        if not path.is_file():
            raise MissingFileError(f"{setting}={path} does not exist; give a CSV or JSON-lines file")
        if path.suffix.lower() in (".jsonl", ".json"):
            table = pd.read_json(path, lines=True, dtype=str)
        else:
            table = pd.read_csv(path, dtype=str, keep_default_na=False)
        if "file" not in table.columns and "wav" in table.columns:  # EmoBox names the audio path `wav`
            table = table.rename(columns={"wav": "file"})
        return table

    def read(self) -> pd.DataFrame:
        """The listed clips with their part: columns `file`, `part`."""
        if self.path is not None:
            table = self._read_table(self.path, "split.path")
            if not {"file", "part"} <= set(table.columns):
                raise SettingError(f"{self.path}: needs columns 'file' and 'part', found {list(table.columns)}")
            bad = sorted(set(table["part"]) - set(PARTS))
            if bad:
                raise SettingError(f"{self.path}: part values {bad} are not train, val or test")
            return table
        tables = []
        for part, path in self.part_files.items():
            table = self._read_table(path, f"split.{part}")
            if "file" not in table.columns:
                raise SettingError(f"{path}: needs a 'file' (or EmoBox's 'wav') column, found {list(table.columns)}")
            tables.append(pd.DataFrame({"file": table["file"], "part": part}))
        return pd.concat(tables, ignore_index=True)

    def assign(self, manifest: pd.DataFrame) -> np.ndarray:
        table = self.read()
        source = self.path or ", ".join(str(p) for p in self.part_files.values())
        by_key: dict[str, list[int]] = {}
        for row, path in enumerate(manifest["path"]):
            parts = clip_id(path)
            for depth in range(1, len(parts) + 1):
                by_key.setdefault("/".join(parts[-depth:]), []).append(row)
        assignment = np.full(len(manifest), "unused", dtype=object)
        missing, ambiguous, twice = [], [], []
        corpora = table["corpus"] if "corpus" in table.columns else [None] * len(table)
        corpus_of = manifest["corpus"].to_numpy() if "corpus" in manifest.columns else np.full(len(manifest), None)
        for entry, corpus, part in zip(table["file"], corpora, table["part"]):
            parts, rows = clip_id(entry), []
            # The shortest end of the listed path that names exactly one clip (longer ends may differ in the
            # folders above the corpus, e.g. a benchmark's download folder).
            for depth in range(1, len(parts) + 1):
                rows = by_key.get("/".join(parts[-depth:]), [])
                if corpus:
                    rows = [row for row in rows if corpus_of[row] == corpus]
                if len(rows) <= 1:
                    break
            if not rows:
                missing.append(entry)
            elif len(rows) > 1:
                ambiguous.append(entry)
            elif assignment[rows[0]] not in ("unused", part):
                twice.append(entry)
            else:
                assignment[rows[0]] = part
        if missing:
            raise SettingError(f"{source}: {len(missing)} listed file(s) are not in the data, e.g. {missing[:5]}; "
                             "check paths.data_dir and the file names")
        if ambiguous:
            raise SettingError(f"{source}: {ambiguous[:5]} match several clips; list a longer part of the path")
        if twice:
            raise SettingError(f"{source}: {twice[:5]} are listed in two different parts")
        if self.path is None and "val" not in self.part_files:
            assignment = self._carve_val(manifest, assignment)
        return assignment

    def _carve_val(self, manifest: pd.DataFrame, assignment: np.ndarray) -> np.ndarray:
        """Move whole training speakers (per corpus, genders alternating) to val."""
        rng = np.random.default_rng(self.seed)
        train = manifest[assignment == "train"]
        val_speakers = set()
        for corpus, rows in train.groupby("corpus", sort=True):
            order = gender_interleaved_speakers(rows, rng)
            if len(order) < 2:
                raise SettingError(f"split=file: corpus {corpus} has {len(order)} training speaker(s), too few to "
                                   "carve a val part from; give split.val")
            val_speakers.update(order[:max(1, round(self.val_fraction * len(order)))])
        carved = assignment.copy()
        carved[(assignment == "train") & manifest["speaker"].isin(val_speakers).to_numpy()] = "val"
        return carved


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
