"""Split protocols: which manifest rows are train, val and test.

Each protocol is a small object with `assign(manifest) -> array of 'train'/'val'/'test'`, built from
`conf/split/*.yaml`. Speaker-independent protocols are checked for leakage before anything trains.
"""

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

PARTS = ("train", "val", "test")


class RandomSplit:
    """Stratified random split of clips (the seeds' 80/10/10). Speakers leak across parts: optimistic."""

    speaker_disjoint = False

    def __init__(self, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0,
                 stratify_by: tuple[str, ...] = ("corpus", "emotion")):
        if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ValueError(
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
            raise ValueError(
                f"split=random cannot stratify {len(rows)} clips by {self.stratify_by}: {error}. "
                "Use more data or lower split.stratify_by."
            ) from None
        assignment = np.empty(len(rows), dtype=object)
        assignment[train], assignment[val], assignment[test] = "train", "val", "test"
        return assignment


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
            speakers = rows.drop_duplicates("speaker").sort_values("speaker")
            if len(speakers) < 3:
                raise ValueError(
                    f"split=speaker_independent: corpus {corpus} has {len(speakers)} speaker(s); at least 3 are "
                    "needed for speaker-disjoint train/val/test. Set split.val_speakers and split.test_speakers, "
                    "or use split=random."
                )
            # Shuffle within gender, then interleave genders so any prefix is gender-balanced.
            by_gender = [rng.permutation(group["speaker"].to_numpy()) for _, group in speakers.groupby("gender")]
            order = [s for rank in range(max(map(len, by_gender))) for group in by_gender
                     for s in group[rank:rank + 1]]
            n_test = max(1, round(self.test_fraction * len(order)))
            n_val = max(1, round(self.val_fraction * len(order)))
            if n_test + n_val >= len(order):
                raise ValueError(f"split=speaker_independent: fractions leave no training speaker in {corpus}")
            test.update(order[:n_test])
            val.update(order[n_test:n_test + n_val])
        return val, test

    def assign(self, manifest: pd.DataFrame) -> np.ndarray:
        val, test = self._draw(manifest)
        if self.val_speakers is not None:
            val = set(self.val_speakers)
        if self.test_speakers is not None:
            test = set(self.test_speakers)
        unknown = (val | test) - set(manifest["speaker"])
        if unknown:
            raise ValueError(f"split: speakers {sorted(unknown)} are not in the manifest; ids look like "
                             f"{manifest['speaker'].iloc[0]!r}")
        speaker = manifest["speaker"]
        assignment = np.where(speaker.isin(test), "test", np.where(speaker.isin(val), "val", "train")).astype(object)
        if val & test:
            raise ValueError(f"split: speakers {sorted(val & test)} are in both val_speakers and test_speakers")
        return assignment


def check_speaker_disjoint(manifest: pd.DataFrame, assignment: np.ndarray) -> None:
    """Raise if any speaker has clips in more than one part (leakage), naming the speakers."""
    parts_per_speaker = pd.Series(assignment, index=manifest.index).groupby(manifest["speaker"]).nunique()
    leaking = sorted(parts_per_speaker[parts_per_speaker > 1].index)
    if leaking:
        raise ValueError(f"speaker leakage: {leaking} appear in more than one of train/val/test")


def summary(manifest: pd.DataFrame, assignment: np.ndarray) -> pd.DataFrame:
    """Clips per corpus, emotion and part: the table written to every run dir."""
    table = manifest.assign(part=assignment).pivot_table(
        index=["corpus", "emotion"], columns="part", values="path", aggfunc="count", fill_value=0
    )
    return table.reindex(columns=[p for p in PARTS if p in table.columns]).reset_index()
