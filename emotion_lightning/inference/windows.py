"""Cutting a recording into the model's fixed-length windows, as training cut clips."""

from collections.abc import Iterator

import numpy as np

from emotion_lightning.data.errors import SettingError


def window_starts(num_samples: int, window: int, hop: int) -> list[int]:
    """Start samples of overlapping windows covering the whole recording.

    One window for a recording no longer than `window`; otherwise every `hop` samples, plus a last window
    ending exactly at the end, so no audio is left out and no window is mostly padding.
    """
    if window <= 0 or not 0 < hop <= window:
        raise SettingError(f"need 0 < hop <= window (got window={window}, hop={hop} samples)")
    if num_samples <= window:
        return [0]
    starts = list(range(0, num_samples - window + 1, hop))
    if starts[-1] != num_samples - window:
        starts.append(num_samples - window)
    return starts


def cut(waveform: np.ndarray, starts: list[int], window: int) -> Iterator[np.ndarray]:
    """The windows at `starts`, zero-padded at the end when the recording is shorter (like ClipDataset)."""
    for start in starts:
        piece = waveform[start:start + window]
        if len(piece) < window:
            piece = np.pad(piece, (0, window - len(piece)))
        yield piece
