"""Reading audio files: any format libsndfile reads, mixed to mono and resampled to the model rate.

A file is checked against DecodeLimits on its header before it is decoded, then decoded in blocks that are mixed
to mono and resampled as they come: a small file can declare hours at a huge rate and channel count (gigabytes
once decoded whole), so memory stays one mono copy at the model rate whatever the file holds.
"""

import errno
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from emotion_lightning.data.errors import SettingError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3")
# Containers libsndfile does not read, with the ffmpeg demuxer each is read with (forced, never guessed from the
# content); decoded through ffmpeg when one is installed.
FFMPEG_FORMATS = {".m4a": "mov", ".aac": "aac", ".mp4": "mov"}
FFMPEG_EXTENSIONS = tuple(FFMPEG_FORMATS)
FFMPEG_TIMEOUT = 120  # seconds ffmpeg may take to decode one file
BLOCK_FRAMES = 1 << 16  # frames decoded at a time
FFMPEG_HINT = ("install ffmpeg (apt-get install ffmpeg, or pip install 'emotion-lightning[m4a]' for a bundled "
               "binary), or convert the file to WAV/FLAC first")


# An array axis this long or shorter may be channels; a longer one is samples (arrays of unknown layout).
MAX_CHANNELS = 32
# Below this a "sample rate" is a mistake (seconds or kHz passed as Hz), and resampling it would blow up memory.
MIN_SAMPLE_RATE = 1000


def find_audio_files(root: str | Path, extensions: tuple[str, ...] = AUDIO_EXTENSIONS,
                     files_only: bool = True) -> list[Path]:
    """Every file under `root` (recursively) whose extension is in `extensions`, sorted by path.

    files_only=False also lists what only looks like audio by name (a folder called x.wav, a broken link), so a
    caller that must answer for every such path can report it instead of dropping it silently.
    """
    return sorted(path for path in Path(root).rglob("*")
                  if path.suffix.lower() in extensions and (path.is_file() or not files_only))


class AudioError(ValueError):
    """Audio that cannot be used (a file or an array); the message says why. A ValueError, so callers of
    `predict_array` can catch one type for every bad input."""


def check_readable(path: str | Path) -> None:
    """Raise AudioError in words a person understands when `path` is not a readable regular file
    (libsndfile says only "System error." for a missing file or a permission problem)."""
    path = Path(path)
    try:
        if path.is_symlink() and not path.exists():
            raise AudioError(f"broken symbolic link (it points to {os.readlink(path)}, which does not exist)")
        if not path.exists():
            raise AudioError("file not found; check the path")
        if path.is_dir():
            raise AudioError("is a folder, not an audio file; pass the folder itself to read the audio inside")
        if not path.is_file():
            raise AudioError("not a regular file (a device, socket or pipe); pass an audio file")
        with path.open("rb"):
            pass
    except PermissionError:
        raise AudioError("permission denied: this user cannot read the file; check its permissions") from None
    except OSError as error:
        reason = os.strerror(error.errno) if error.errno in errno.errorcode else str(error)
        raise AudioError(f"cannot open the file: {reason}") from None


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    frames: int
    channels: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


class TooLongError(AudioError):
    """Audio longer than the max_seconds setting (the service answers 413, not 422)."""


@dataclass(frozen=True)
class DecodeLimits:
    """What a file may hold to be decoded (the settings max_seconds, max_sample_rate, max_channels); refused on
    its header, before decoding, and again as blocks arrive when a header under-declares its length."""

    max_seconds: float | None = None
    max_sample_rate: int = 192_000
    max_channels: int = 8

    def __post_init__(self):
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise SettingError(f"max_seconds={self.max_seconds}; use a positive number of seconds")
        if not MIN_SAMPLE_RATE <= self.max_sample_rate:
            raise SettingError(f"max_sample_rate={self.max_sample_rate}; use at least {MIN_SAMPLE_RATE} Hz "
                               "(192000 by default)")
        if not 1 <= self.max_channels:
            raise SettingError(f"max_channels={self.max_channels}; use 1 or more (8 by default)")

    def check(self, info: "AudioInfo") -> None:
        """AudioError naming the setting a header exceeds (TooLongError for the length)."""
        if info.sample_rate > self.max_sample_rate:
            raise AudioError(f"sample rate {info.sample_rate} Hz is above max_sample_rate={self.max_sample_rate}; "
                             "resample the file first (e.g. to 48000 Hz) or raise the setting")
        if info.sample_rate < MIN_SAMPLE_RATE:
            raise AudioError(f"sample rate {info.sample_rate} Hz is below {MIN_SAMPLE_RATE} Hz, not an audio rate")
        if info.channels > self.max_channels:
            raise AudioError(f"{info.channels} channels, more than max_channels={self.max_channels}; mix the file "
                             "down first or raise the setting")
        self.check_seconds(info.duration)

    def check_seconds(self, seconds: float) -> None:
        if self.max_seconds is not None and seconds > self.max_seconds:
            raise TooLongError(f"{seconds:.1f} s of audio is longer than max_seconds={self.max_seconds:g}")


def probe(path: str | Path) -> AudioInfo:
    """Read the header only; raise AudioError for unreadable or empty files."""
    path = Path(path)
    check_readable(path)
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


def ffmpeg_executable() -> str | None:
    """`ffmpeg` on PATH, else the binary of the optional imageio-ffmpeg package, else None."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    return imageio_ffmpeg.get_ffmpeg_exe()


def _decode_with_ffmpeg(path: Path, sample_rate: int, limits: DecodeLimits) -> np.ndarray:
    """Decode M4A/AAC with ffmpeg to a temporary mono float WAV at `sample_rate`, then read that as any file.

    The demuxer comes from the extension, only local files may be opened (no network or other protocols),
    decoding stops a second past max_seconds (the result is then refused as too long) and after
    FFMPEG_TIMEOUT seconds."""
    executable = ffmpeg_executable()
    if executable is None:
        raise AudioError(f"{path.suffix} audio needs ffmpeg, which was not found: {FFMPEG_HINT}")
    length = [] if limits.max_seconds is None else ["-t", f"{limits.max_seconds + 1:g}"]
    with tempfile.TemporaryDirectory() as folder:
        decoded = Path(folder) / "decoded.wav"
        command = [executable, "-nostdin", "-v", "error", "-protocol_whitelist", "file",
                   "-f", FFMPEG_FORMATS[path.suffix.lower()], "-i", f"file:{path.resolve()}", *length,
                   "-vn", "-ac", "1", "-ar", str(sample_rate), "-c:a", "pcm_f32le", "-f", "wav", str(decoded)]
        try:
            result = subprocess.run(command, capture_output=True, text=True, errors="replace",
                                    timeout=FFMPEG_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AudioError(f"ffmpeg took longer than {FFMPEG_TIMEOUT} s to decode it; convert the file to "
                             "WAV/FLAC first") from None
        if result.returncode != 0 or not decoded.is_file():
            message = result.stderr.strip().splitlines()[-1:] or ["no output"]
            raise AudioError(f"cannot decode audio with ffmpeg: {message[0]}")
        return _decode(decoded, sample_rate, limits)


def _decode(path: Path, sample_rate: int, limits: DecodeLimits) -> np.ndarray:
    """Check the header against `limits`, then decode in blocks, each mixed to mono and resampled as it comes."""
    with sf.SoundFile(str(path)) as audio:
        source_rate = int(audio.samplerate)
        limits.check(AudioInfo(source_rate, max(int(audio.frames), 0), int(audio.channels)))
        stream = (None if source_rate == sample_rate else
                  soxr.ResampleStream(source_rate, sample_rate, 1, dtype="float32", quality="HQ"))
        pieces, frames = [], 0
        for block in audio.blocks(BLOCK_FRAMES, dtype="float32", always_2d=True):
            frames += len(block)
            limits.check_seconds(frames / source_rate)
            if not np.isfinite(block).all():
                raise AudioError("contains NaN or infinite samples")
            mono = np.ascontiguousarray(block.mean(axis=1), dtype=np.float32)
            pieces.append(mono if stream is None else stream.resample_chunk(mono))
    if frames == 0:
        raise AudioError("no audio samples")
    if stream is not None:
        pieces.append(stream.resample_chunk(np.zeros(0, np.float32), last=True))
    return np.concatenate(pieces).astype(np.float32, copy=False)


def load(path: str | Path, sample_rate: int, limits: DecodeLimits = DecodeLimits()) -> np.ndarray:
    """Decode a file to a mono float32 array at `sample_rate`; raise AudioError if it is not usable audio or
    exceeds `limits` (TooLongError past max_seconds).

    libsndfile reads WAV, FLAC, OGG/Opus and MP3; M4A/AAC go through ffmpeg when one is installed.
    """
    path = Path(path)
    check_readable(path)
    if path.stat().st_size == 0:
        raise AudioError("empty file (0 bytes)")
    try:
        sf.info(str(path))
    except Exception as error:  # libsndfile raises several types for what it cannot read
        if path.suffix.lower() not in FFMPEG_EXTENSIONS:
            raise AudioError(f"cannot decode audio: {error}") from None
        return _decode_with_ffmpeg(path, sample_rate, limits)
    try:
        return _decode(path, sample_rate, limits)
    except AudioError:
        raise
    except Exception as error:  # a body that breaks off or is corrupt after a good header
        raise AudioError(f"cannot decode audio: {error}") from None


def channels_last(waveform, sample_rate) -> tuple[np.ndarray, int]:
    """An in-memory recording of unknown layout -> ((samples, channels) float32, rate), or AudioError saying why.

    Takes numpy arrays and torch tensors (converted without importing torch), any float or integer dtype
    (integers scaled to [-1, 1], unsigned ones centred first), and (samples,), (channels, samples) or
    (samples, channels). The channel axis is taken only when the shape says so: one axis of at most
    MAX_CHANNELS and the other longer, or an axis of length 1; anything else would silently read channels as
    time (a (2, N) array as N channels of 2 samples), so it is refused naming the shape.
    """
    if sample_rate is None:
        raise AudioError("sample_rate is required: the rate (Hz) the waveform was recorded at, e.g. 16000")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float, np.integer, np.floating)) \
            or not float(sample_rate).is_integer() or sample_rate <= 0:
        raise AudioError(f"sample_rate={sample_rate!r}; pass a positive whole number of samples per second")
    if hasattr(waveform, "detach") and hasattr(waveform, "numpy"):  # a torch tensor (torch is already loaded)
        waveform = waveform.detach().cpu()
        waveform = (waveform.float() if waveform.is_floating_point() else waveform).numpy()
    data = np.asarray(waveform)
    kind = data.dtype.kind
    if kind not in "fiu":
        raise AudioError(f"waveform of dtype {data.dtype}; pass float or integer samples")
    if data.ndim == 0 or data.ndim > 2:
        raise AudioError(f"waveform of shape {data.shape}; pass (samples,), (channels, samples) or "
                         "(samples, channels)")
    if data.size == 0:
        raise AudioError(f"no audio samples (shape {data.shape})")
    if kind == "f":
        if not np.isfinite(data).all():
            raise AudioError("waveform contains NaN or infinite samples; clean or drop them first")
        with np.errstate(over="ignore"):
            data = data.astype(np.float32)
        if not np.isfinite(data).all():
            raise AudioError("waveform has samples beyond the float32 range; scale it to [-1, 1] first")
    else:
        bits = data.dtype.itemsize * 8
        centre = 2.0 ** (bits - 1) if kind == "u" else 0.0
        data = ((data.astype(np.float64) - centre) / 2.0 ** (bits - 1)).astype(np.float32)
    if data.ndim == 1:
        return data[:, None], int(sample_rate)
    rows, columns = data.shape
    if columns == 1 or (rows > MAX_CHANNELS >= columns):
        return data, int(sample_rate)
    if rows == 1 or (columns > MAX_CHANNELS >= rows):
        return np.ascontiguousarray(data.T), int(sample_rate)
    raise AudioError(f"waveform of shape {data.shape}: cannot tell channels from samples (a channel axis has at "
                     f"most {MAX_CHANNELS} entries and the other axis must be longer); pass (samples,) for mono "
                     "or (samples, channels)")


def to_model_rate(data: np.ndarray, source_rate: int, sample_rate: int) -> np.ndarray:
    """(samples, channels) or (samples,) audio -> mono float32 at `sample_rate`; AudioError if unusable."""
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 1:
        data = data[:, None]
    if data.ndim != 2:
        raise AudioError(f"expected (samples,) or (samples, channels) audio, got shape {data.shape}")
    if source_rate < MIN_SAMPLE_RATE:
        raise AudioError(f"sample rate {source_rate} Hz is below {MIN_SAMPLE_RATE} Hz, not an audio rate; give the "
                         "rate in samples per second (e.g. 16000)")
    if data.shape[0] == 0:
        raise AudioError("no audio samples")
    if not np.isfinite(data).all():
        raise AudioError("contains NaN or infinite samples")
    mono = np.ascontiguousarray(data.mean(axis=1), dtype=np.float32)
    return resample(mono, source_rate, sample_rate)
