"""The manifest: one table row per usable clip of the configured corpora, built once and cached.

The cache key covers every file's path, size and modification time and the corpus settings, so adding,
removing or touching a file rebuilds the manifest. Files that cannot be used are listed with the reason.
"""

import hashlib
import json
import logging
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from emotion_lightning.data.atomic import atomic_path
from emotion_lightning.data.audio import AudioError, probe
from emotion_lightning.data.corpora import Corpus

log = logging.getLogger(__name__)

COLUMNS = [
    "path", "corpus", "speaker", "gender", "emotion", "emotion_code", "intensity", "text",
    "duration", "sample_rate", "channels",
]


def fingerprint(corpora: list[Corpus]) -> str:
    """Hash of the corpus settings and of every audio file's and label file's path, size and mtime (a label file
    that is missing hashes as absent, so adding it later rebuilds the manifest)."""
    digest = hashlib.sha1()
    for corpus in corpora:
        settings = {"name": corpus.name, "root": str(corpus.root.resolve()), "map": corpus.emotion_map}
        settings.update({k: str(v) for k, v in vars(corpus).items() if not k.startswith("_")})
        digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
        for path in corpus.audio_files():
            stat = path.stat()
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        for path in corpus.label_files():
            stat = path.stat() if path.is_file() else None
            state = f"{stat.st_size}\0{stat.st_mtime_ns}" if stat else "absent"
            digest.update(f"{path}\0{state}\n".encode())
    return digest.hexdigest()[:16]


def scan(corpora: list[Corpus]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Parse and probe every file: (manifest, skipped) where skipped has columns path, reason."""
    rows, skipped = [], []
    for corpus in corpora:
        files = corpus.audio_files()
        for path in tqdm(files, desc=f"manifest {corpus.name}", unit="file", leave=False):
            try:
                labels = corpus.parse(path)
            except ValueError as error:
                skipped.append({"path": str(path), "reason": f"file name: {error}"})
                continue
            emotion = corpus.emotion_map.get(labels.emotion)
            if emotion is None:
                continue  # an emotion the config leaves out on purpose, not a bad file
            try:
                info = probe(path)
            except AudioError as error:
                skipped.append({"path": str(path), "reason": str(error)})
                continue
            rows.append({
                "path": str(path), "corpus": corpus.name, "speaker": labels.speaker, "gender": labels.gender,
                "emotion": emotion, "emotion_code": labels.emotion, "intensity": labels.intensity,
                "text": labels.text, "duration": round(info.duration, 4), "sample_rate": info.sample_rate,
                "channels": info.channels,
            })
    return pd.DataFrame(rows, columns=COLUMNS), pd.DataFrame(skipped, columns=["path", "reason"])


def read_csv(path: Path) -> pd.DataFrame:
    # keep_default_na=False: an empty intensity (TESS) stays "" instead of NaN; codes stay strings.
    return pd.read_csv(path, dtype=str, keep_default_na=False).astype(
        {"duration": float, "sample_rate": int, "channels": int}
    )


def load_manifest(corpora: list[Corpus], cache_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The cached manifest for these corpora, rebuilt when any file or setting changed."""
    cache_dir = Path(cache_dir) / "manifests"
    key = fingerprint(corpora)
    manifest_path, skipped_path = cache_dir / f"manifest-{key}.csv", cache_dir / f"skipped-{key}.csv"
    if manifest_path.is_file() and skipped_path.is_file():
        return read_csv(manifest_path), pd.read_csv(skipped_path, dtype=str, keep_default_na=False)
    manifest, skipped = scan(corpora)
    with atomic_path(skipped_path) as temporary:
        skipped.to_csv(temporary, index=False)
    with atomic_path(manifest_path) as temporary:  # written last: its presence marks a complete build
        manifest.to_csv(temporary, index=False)
    log.info("manifest: %d clips, %d skipped files -> %s", len(manifest), len(skipped), manifest_path)
    return read_csv(manifest_path), skipped
