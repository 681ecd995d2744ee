"""Reading audio files: any format libsndfile reads, mixed to mono and resampled to the model rate."""

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


def find_audio_files(root: str | Path, extensions: tuple[str, ...] = AUDIO_EXTENSIONS) -> list[Path]:
    """Every file under `root` (recursively) whose extension is in `extensions`, sorted by path."""
    return sorted(path for path in Path(root).rglob("*") if path.suffix.lower() in extensions and path.is_file())


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
                                 str(decoded)], capture_output=True, text=True)
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
    try:
        data, source_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:
        if path.suffix.lower() not in FFMPEG_EXTENSIONS:
            raise AudioError(f"cannot decode audio: {error}") from None
        data, source_rate = _read_with_ffmpeg(path)
    return to_model_rate(data, int(source_rate), sample_rate)


def to_model_rate(data: np.ndarray, source_rate: int, sample_rate: int) -> np.ndarray:
    """(samples, channels) or (samples,) audio -> mono float32 at `sample_rate`; AudioError if unusable."""
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 1:
        data = data[:, None]
    if data.ndim != 2:
        raise AudioError(f"expected (samples,) or (samples, channels) audio, got shape {data.shape}")
    if source_rate <= 0:
        raise AudioError(f"sample rate must be positive, got {source_rate}")
    if data.shape[0] == 0:
        raise AudioError("no audio samples")
    if not np.isfinite(data).all():
        raise AudioError("contains NaN or infinite samples")
    mono = np.ascontiguousarray(data.mean(axis=1), dtype=np.float32)
    return resample(mono, source_rate, sample_rate)
