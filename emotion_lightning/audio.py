"""Reading audio files: any format libsndfile reads, mixed to mono and resampled to the model rate."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3")


class AudioError(Exception):
    """A file that cannot be used as audio; the message says why."""


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    frames: int
    channels: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def probe(path: str | Path) -> AudioInfo:
    """Read the header only; raise AudioError for unreadable or empty files."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise AudioError("empty file (0 bytes)")
        info = sf.info(str(path))
    except AudioError:
        raise
    except Exception as error:  # libsndfile raises several types for bad headers
        raise AudioError(f"unreadable audio header: {error}") from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioError(f"no audio samples (frames={info.frames}, sample_rate={info.samplerate})")
    return AudioInfo(sample_rate=int(info.samplerate), frames=int(info.frames), channels=int(info.channels))


def resample(waveform: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """High-quality band-limited resampling of a mono float32 array.

    soxr rather than torchaudio: torchaudio's sinc kernel grows with the reduced ratio and takes seconds
    per clip for rates such as TESS's 24,414 Hz (ratio 8000/12207); soxr takes milliseconds for any ratio.
    """
    if source_rate == target_rate:
        return waveform
    return soxr.resample(waveform, source_rate, target_rate, quality="HQ").astype(np.float32, copy=False)


def load(path: str | Path, sample_rate: int) -> np.ndarray:
    """Decode a file to a mono float32 array at `sample_rate`; raise AudioError if it is not usable audio."""
    try:
        data, source_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:
        raise AudioError(f"cannot decode audio: {error}") from None
    if data.shape[0] == 0:
        raise AudioError("no audio samples")
    if not np.isfinite(data).all():
        raise AudioError("contains NaN or infinite samples")
    mono = np.ascontiguousarray(data.mean(axis=1), dtype=np.float32)
    return resample(mono, int(source_rate), sample_rate)
