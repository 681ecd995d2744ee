"""Waveform transforms for degraded-audio conditions and training augmentation.

Each transform maps a mono float32 clip to a degraded clip of the same length. They run between the
waveform cache and the batch (see `ClipDataset`): at test time as a robustness condition, seeded per clip so
a condition's score is the same run to run; in training as augmentation, each applied with probability `p`
and with its parameters drawn from ranges (`snr_db: [0, 20]`).
"""

import io
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import soundfile as sf

from emotion_lightning.data.audio import resample
from emotion_lightning.data.errors import SettingError

Range = float | Sequence[float]
# A value fixed (a number) or drawn uniformly per clip (a [low, high] pair).


def draw(value: Range, rng: np.random.Generator) -> float:
    """A fixed value, or one drawn uniformly from a [low, high] range."""
    if isinstance(value, (int, float)):
        return float(value)
    low, high = value
    return float(rng.uniform(low, high))


def choose(options, rng: np.random.Generator):
    """A fixed option, or one picked at random from a list of options."""
    if isinstance(options, (str, int, float)):
        return options
    options = list(options)
    return options[int(rng.integers(len(options)))]


@dataclass
class ClipContext:
    """What a transform may need besides the clip: the sample rate, and other clips of the same split
    (`other_clips(rng, count)`, each as long as the clip) for babble noise."""

    sample_rate: int
    other_clips: Callable[[np.random.Generator, int], list[np.ndarray]]


class WaveformTransform:
    """Base class: `p` is the probability of applying the transform (1 for test conditions)."""

    def __init__(self, p: float = 1.0):
        if not 0.0 <= p <= 1.0:
            raise SettingError(f"{type(self).__name__}: p={p} must lie in [0, 1]")
        self.p = p

    def apply(self, clip: np.ndarray, rng: np.random.Generator, context: ClipContext) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


def power(signal: np.ndarray) -> float:
    return float(np.mean(np.square(signal, dtype=np.float64)))


def snr_db(clean: np.ndarray, noise: np.ndarray) -> float:
    """Signal-to-noise ratio of `clean` to the added `noise`, in dB."""
    return 10 * np.log10(power(clean) / power(noise))


def pink_noise(length: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise shaped to a 1/f power spectrum (amplitude 1/sqrt(f)) in the frequency domain."""
    spectrum = np.fft.rfft(rng.standard_normal(length))
    frequencies = np.arange(len(spectrum), dtype=np.float64)
    frequencies[0] = 1.0  # keep DC finite; it is removed below
    spectrum /= np.sqrt(frequencies)
    spectrum[0] = 0.0
    return np.fft.irfft(spectrum, n=length)


class AddNoise(WaveformTransform):
    """Additive noise at a signal-to-noise ratio measured over the whole clip.

    kind: `white`, `pink` or `babble` (the sum of `talkers` other utterances of the same split, each at
    equal power: speech-shaped noise that overlaps the emotion cues), or a list to draw from.
    """

    KINDS = ("white", "pink", "babble")

    def __init__(self, kind: str | Sequence[str] = "white", snr_db: Range = 10.0, talkers: int = 6, p: float = 1.0):
        super().__init__(p)
        kinds = [kind] if isinstance(kind, str) else list(kind)
        if not kinds or any(k not in self.KINDS for k in kinds):
            raise SettingError(f"AddNoise: kind={kind!r}; use one or more of {list(self.KINDS)}")
        self.kind, self.snr_db, self.talkers = kind, snr_db, talkers

    def noise(self, kind: str, length: int, rng: np.random.Generator, context: ClipContext) -> np.ndarray:
        if kind == "white":
            return rng.standard_normal(length)
        if kind == "pink":
            return pink_noise(length, rng)
        voices = [v for v in context.other_clips(rng, self.talkers) if power(v) > 0]
        if not voices:  # a split of one clip, or of silence: nothing to babble with
            return rng.standard_normal(length)
        return sum(v / np.sqrt(power(v)) for v in voices)

    def apply(self, clip, rng, context):
        noise = self.noise(choose(self.kind, rng), len(clip), rng, context).astype(np.float64)
        signal_power = max(power(clip), 1e-10)  # silence gets noise as if the clip were at -100 dB
        scale = np.sqrt(signal_power / (power(noise) * 10 ** (draw(self.snr_db, rng) / 10)))
        return (clip + scale * noise).astype(np.float32)


class Gain(WaveformTransform):
    """Volume change in dB, then clipping at full scale as a recorder's converter would."""

    def __init__(self, db: Range = 20.0, clip: bool = True, p: float = 1.0):
        super().__init__(p)
        self.db, self.clip = db, clip

    def apply(self, clip, rng, context):
        louder = clip * np.float32(10 ** (draw(self.db, rng) / 20))
        return np.clip(louder, -1.0, 1.0) if self.clip else louder


class Resample(WaveformTransform):
    """Down to `sample_rate` (e.g. 8 kHz telephone band) and back to the model's rate: removes everything
    above the lower Nyquist frequency."""

    def __init__(self, sample_rate: int | Sequence[int] = 8000, p: float = 1.0):
        super().__init__(p)
        self.sample_rate = sample_rate

    def apply(self, clip, rng, context):
        rate = int(choose(self.sample_rate, rng))
        restored = resample(resample(clip, context.sample_rate, rate), rate, context.sample_rate)
        return fit_length(restored, len(clip))


def fit_length(signal: np.ndarray, length: int) -> np.ndarray:
    """Cut or zero-pad at the end to `length` samples."""
    if len(signal) >= length:
        return np.ascontiguousarray(signal[:length], dtype=np.float32)
    return np.pad(signal, (0, length - len(signal))).astype(np.float32)


class Codec(WaveformTransform):
    """A real lossy encode and decode through libsndfile: `mp3` (LAME, constant bitrate) or `opus` (in Ogg).

    libsndfile takes a compression level in [0, 1], not a bitrate; `level` inverts its mapping (LAME CBR:
    160 - 152 * level kbps below 32 kHz, 320 - 288 * level from 32 kHz; Opus: about 256 - 250 * level kbps),
    and LAME rounds to its nearest legal bitrate.
    """

    FORMATS = {"mp3": ("MP3", "MPEG_LAYER_III"), "opus": ("OGG", "OPUS")}
    OPUS_RATES = (8000, 12000, 16000, 24000, 48000)

    def __init__(self, format: str = "mp3", bitrate_kbps: float | Sequence[float] = 64, p: float = 1.0):
        super().__init__(p)
        if format not in self.FORMATS:
            raise SettingError(f"Codec: format={format!r}; use one of {list(self.FORMATS)}")
        self.format, self.bitrate_kbps = format, bitrate_kbps

    def level(self, bitrate_kbps: float, sample_rate: int) -> float:
        if self.format == "opus":
            highest, span = 256.0, 250.0
        else:
            highest, span = (320.0, 288.0) if sample_rate >= 32000 else (160.0, 152.0)
        level = (highest - bitrate_kbps) / span
        if not 0.0 <= level < 1.0:
            raise SettingError(f"Codec: {bitrate_kbps} kbps is outside what {self.format} offers at {sample_rate} Hz "
                               f"({highest - span:.0f} to {highest:.0f} kbps)")
        return level

    def encode(self, clip: np.ndarray, sample_rate: int, bitrate_kbps: float) -> bytes:
        if self.format == "opus" and sample_rate not in self.OPUS_RATES:
            raise SettingError(f"Codec: Opus encodes only at {self.OPUS_RATES} Hz, not {sample_rate} Hz "
                               "(audio.sample_rate)")
        container, subtype = self.FORMATS[self.format]
        encoded = io.BytesIO()
        sf.write(encoded, clip, sample_rate, format=container, subtype=subtype,
                 compression_level=self.level(bitrate_kbps, sample_rate),
                 bitrate_mode="CONSTANT" if self.format == "mp3" else None)
        return encoded.getvalue()

    @staticmethod
    def decode(encoded: bytes) -> np.ndarray:
        return sf.read(io.BytesIO(encoded), dtype="float32")[0]

    def apply(self, clip, rng, context):
        encoded = self.encode(clip, context.sample_rate, float(choose(self.bitrate_kbps, rng)))
        # The decoder may return a partial frame more or less than went in: keep the clip's length.
        return fit_length(self.decode(encoded), len(clip))


class Chain:
    """Transforms applied in order, each with its own probability; an empty chain is the clean condition."""

    def __init__(self, transforms: Sequence[WaveformTransform] = ()):
        self.transforms = list(transforms)

    def __bool__(self) -> bool:
        return bool(self.transforms)

    def __call__(self, clip: np.ndarray, rng: np.random.Generator, context: ClipContext) -> np.ndarray:
        for transform in self.transforms:
            if transform.p >= 1.0 or rng.random() < transform.p:
                clip = transform.apply(clip, rng, context)
        return clip

    def __repr__(self) -> str:
        return f"Chain({self.transforms})"
