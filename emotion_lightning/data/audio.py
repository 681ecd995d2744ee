"""Reading audio files: any format libsndfile reads, mixed to mono and resampled to the model rate."""

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

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3")
# Containers libsndfile does not read; decoded through ffmpeg when one is installed.
FFMPEG_EXTENSIONS = (".m4a", ".aac", ".mp4")
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


def _read_with_ffmpeg(path: Path) -> tuple[np.ndarray, int]:
    """Decode M4A/AAC (or anything ffmpeg reads) to a temporary float WAV, then read it with soundfile."""
    executable = ffmpeg_executable()
    if executable is None:
        raise AudioError(f"{path.suffix} audio needs ffmpeg, which was not found: {FFMPEG_HINT}")
    with tempfile.TemporaryDirectory() as folder:
        decoded = Path(folder) / "decoded.wav"
        result = subprocess.run([executable, "-nostdin", "-v", "error", "-i", str(path), "-vn", "-c:a", "pcm_f32le",
                                 str(decoded)], capture_output=True, text=True, errors="replace")
        if result.returncode != 0 or not decoded.is_file():
            message = result.stderr.strip().splitlines()[-1:] or ["no output"]
            raise AudioError(f"cannot decode audio with ffmpeg: {message[0]}")
        data, source_rate = sf.read(str(decoded), dtype="float32", always_2d=True)
    return data, int(source_rate)


def load(path: str | Path, sample_rate: int) -> np.ndarray:
    """Decode a file to a mono float32 array at `sample_rate`; raise AudioError if it is not usable audio.

    libsndfile reads WAV, FLAC, OGG/Opus and MP3; M4A/AAC go through ffmpeg when one is installed.
    """
    path = Path(path)
    check_readable(path)
    if path.stat().st_size == 0:
        raise AudioError("empty file (0 bytes)")
    try:
        data, source_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:
        if path.suffix.lower() not in FFMPEG_EXTENSIONS:
            raise AudioError(f"cannot decode audio: {error}") from None
        data, source_rate = _read_with_ffmpeg(path)
    return to_model_rate(data, int(source_rate), sample_rate)


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
