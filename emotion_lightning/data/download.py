"""Download the corpora into DATA_DIR in the layout the corpus parsers read.

    DATA_DIR/ravdess/Audio_Speech_Actors_01-24/Actor_XX/03-01-....wav   (Zenodo record 1188976)
    DATA_DIR/crema_d/AudioWAV/*.wav + VideoDemographics.csv               (GitHub, Git LFS)
    DATA_DIR/tess/<SPK>_<emotion>/*.wav                                   (Borealis Dataverse)

Every source URL is a parameter, so a mirror, a `file://` URL or a plain local path works as well; a network
source must be https (redirects stay on https), or plain http with a checksum or to this machine. Every file
is written under a temporary name (`NAME.part`, never through a symbolic link, or a hidden folder for an
unpacked archive) and renamed only once complete and verified, so an interrupted run never leaves a half file
that looks complete; a second run resumes (HTTP Range for one archive, the list of finished files for per-file
corpora), trusting a `.part` only when a size or checksum will check it. Only names of the corpus's own layout
are installed, each clip's audio header is read before it counts as verified, and an archive is unpacked only
within a size cap and the free disk space. A complete install leaves a marker (`.download.json`: source, count,
file sizes); a later run checks it and downloads nothing.

Standard library only (plus tqdm for progress bars), so this module stays at the bottom layer.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import socket
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from emotion_lightning.data.atomic import temporary_dir, write_text
from emotion_lightning.data.errors import UsageError

log = logging.getLogger(__name__)

CORPORA = ("ravdess", "crema_d", "tess")
MARKER = ".download.json"
CHUNK = 1 << 16
USER_AGENT = "emotion-lightning-downloader"
# Git LFS serves a small text pointer instead of the file when asked through the wrong URL.
LFS_POINTER_PREFIX = b"version https://git-lfs"


class DownloadError(UsageError, RuntimeError):
    """A download that cannot complete; the message names the URL or file and what to do about it."""


class UnreachableError(DownloadError):
    """The host cannot be reached at all (connection refused, DNS failure, no network); retrying won't help."""


class ChecksumError(DownloadError):
    """A downloaded file whose checksum differs from the one its source publishes."""


class _Retryable(Exception):
    """A transient failure (5xx, reset connection, short body) worth another attempt."""


@dataclass(frozen=True)
class License:
    """What a user agrees to by downloading a corpus, printed before the download starts."""

    corpus: str
    license: str
    citation: str
    homepage: str

    def text(self) -> str:
        return (f"{self.corpus}: licensed under {self.license}.\n"
                f"  If you use it, cite: {self.citation}\n"
                f"  Source: {self.homepage}")


LICENSES = {
    "ravdess": License(
        "RAVDESS", "CC BY-NC-SA 4.0 (Creative Commons Attribution-NonCommercial-ShareAlike 4.0)",
        "Livingstone SR, Russo FA (2018). The Ryerson Audio-Visual Database of Emotional Speech and Song "
        "(RAVDESS). PLoS ONE 13(5): e0196391. doi:10.1371/journal.pone.0196391",
        "https://zenodo.org/records/1188976 (doi:10.5281/zenodo.1188976)"),
    "crema_d": License(
        "CREMA-D", "the Open Database License (ODbL v1.0); contents under the Database Contents License",
        "Cao H, Cooper DG, Keutmann MK, Gur RC, Nenkova A, Verma R (2014). CREMA-D: Crowd-sourced Emotional "
        "Multimodal Actors Dataset. IEEE Transactions on Affective Computing 5(4): 377-390. "
        "doi:10.1109/TAFFC.2014.2336244",
        "https://github.com/CheyneyComputerScience/CREMA-D"),
    "tess": License(
        "TESS", "CC BY-NC-ND 4.0 (Creative Commons Attribution-NonCommercial-NoDerivatives 4.0)",
        "Pichora-Fuller MK, Dupuis K (2020). Toronto emotional speech set (TESS). Borealis, V1. "
        "doi:10.5683/SP2/E8H2MF",
        "https://doi.org/10.5683/SP2/E8H2MF"),
}

# How to install each corpus by hand; `{root}` is the corpus folder the loader reads (DATA_DIR/<corpus>).
MANUAL_STEPS = {
    "ravdess": "download Audio_Speech_Actors_01-24.zip from https://zenodo.org/records/1188976 and unzip it into "
               "{root}/ (the loader reads {root}/**/Actor_XX/*.wav), or set "
               "sources.ravdess.archive_url=/path/to/Audio_Speech_Actors_01-24.zip to install a local copy",
    "crema_d": "clone https://github.com/CheyneyComputerScience/CREMA-D with Git LFS (git lfs install && git clone "
               "https://github.com/CheyneyComputerScience/CREMA-D) and copy its AudioWAV/ folder and "
               "VideoDemographics.csv into {root}/",
    "tess": "download the Toronto emotional speech set from https://doi.org/10.5683/SP2/E8H2MF (Borealis "
            "Dataverse: Access Dataset > Download) and unzip its OAF_*/YAF_* folders into {root}/",
}


def manual_steps(corpus: str, root: str | Path) -> str:
    """The by-hand installation of `corpus` into the folder `root`, for error messages."""
    return MANUAL_STEPS[corpus].format(root=Path(root))


# --------------------------------------------------------------------------------------------------------------
# One URL to one file


def parse_checksum(checksum: str | None) -> tuple[str, str] | None:
    """'md5:HEX' or 'sha256:HEX' (the form Zenodo publishes) as (algorithm, hex); None when not given."""
    if not checksum:
        return None
    algorithm, sep, digest = str(checksum).partition(":")
    algorithm = algorithm.strip().lower().replace("-", "")
    if not sep or algorithm not in ("md5", "sha256") or not re.fullmatch(r"[0-9a-fA-F]+", digest.strip()):
        raise ValueError(f"checksum {checksum!r} is not 'md5:HEX' or 'sha256:HEX'")
    return algorithm, digest.strip().lower()


def file_digest(path: str | Path, algorithm: str) -> str:
    """Hex digest of a file, read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def local_path(url: str) -> Path | None:
    """The file a `file://` URL or a plain path names; None for a network URL."""
    parsed = urllib.parse.urlparse(str(url))
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    if not parsed.scheme or (len(parsed.scheme) == 1 and os.name == "nt"):  # a plain path (C:\\... on Windows)
        return Path(url)
    return None


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def check_url(url: str, checksummed: bool) -> None:
    """Refuse a source that could be altered on its way here: a network URL must be https, or plain http with a
    checksum to verify or to this machine; a local path or file:// URL is the user's own."""
    parsed = urllib.parse.urlparse(str(url))
    if local_path(url) is not None or parsed.scheme == "https":
        return
    if parsed.scheme == "http" and (checksummed or parsed.hostname in LOOPBACK_HOSTS):
        return
    if parsed.scheme == "http":
        raise DownloadError(f"{url}: plain http without a checksum could be altered on the way; use an https URL "
                            "or set the source's checksum")
    raise DownloadError(f"{url}: not an https, http, file:// URL or a local path")


class _SameScheme(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to a URL of the same scheme that `check_url` also allows (never https to http)."""

    def __init__(self, checksummed: bool):
        super().__init__()
        self.checksummed = checksummed

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlparse(newurl).scheme != urllib.parse.urlparse(req.full_url).scheme:
            raise DownloadError(f"{req.full_url} redirects to {newurl}, another scheme; refused")
        check_url(newurl, self.checksummed)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _open(url: str, headers: dict | None, timeout: float, checksummed: bool = False):
    """urlopen for a URL `check_url` allows, following redirects only as `_SameScheme` does."""
    check_url(url, checksummed)
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **(headers or {})})
    return urllib.request.build_opener(_SameScheme(checksummed)).open(request, timeout=timeout)


def _unreachable(url: str, reason, manual: str) -> UnreachableError:
    steps = f"\nTo install it by hand: {manual}" if manual else ""
    return UnreachableError(f"cannot reach {url} ({reason}); check the network connection or the URL "
                            f"setting.{steps}")


def _classify(url: str, error: BaseException, manual: str) -> Exception:
    """The exception to raise for a failed request: _Retryable for transient ones, DownloadError otherwise."""
    if isinstance(error, urllib.error.HTTPError):
        if error.code >= 500 or error.code in (408, 429):
            return _Retryable(f"HTTP {error.code} {error.reason}")
        return DownloadError(f"{url} answered HTTP {error.code} {error.reason}; check the URL setting "
                             f"(a mirror must serve the same paths).")
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    # A URLError wrapping a timeout is a connection never made (a read timeout arrives unwrapped): a network that
    # drops packets, where retrying would only make the command hang for minutes before saying so.
    connect_timeout = isinstance(error, urllib.error.URLError) and isinstance(reason, (TimeoutError, socket.timeout))
    if connect_timeout or isinstance(reason, (ConnectionRefusedError, socket.gaierror)) or (
            isinstance(reason, OSError) and reason.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH,
                                                             errno.ECONNREFUSED)):
        return _unreachable(url, reason, manual)
    if isinstance(reason, (ConnectionError, TimeoutError, socket.timeout, http.client.HTTPException)):
        return _Retryable(f"{type(reason).__name__}: {reason}")
    return DownloadError(f"cannot download {url}: {reason}")


def _with_retries(url: str, attempt_once, retries: int, backoff: float, manual: str):
    """Run `attempt_once()` until it succeeds, retrying transient failures `retries` times with backoff."""
    for attempt in range(retries + 1):
        try:
            return attempt_once()
        except _Retryable as error:
            failure = error
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            classified = _classify(url, error, manual)
            if not isinstance(classified, _Retryable):
                raise classified from error
            failure = classified
        if attempt < retries:
            delay = min(backoff * 2 ** attempt, 60.0)
            log.warning("%s: %s; retry %d/%d in %.1fs", url, failure, attempt + 1, retries, delay)
            time.sleep(delay)
    steps = f"\nTo install it by hand: {manual}" if manual else ""
    raise DownloadError(f"giving up on {url} after {retries + 1} attempts (last: {failure}); run the command "
                        f"again later to resume, or use a mirror.{steps}")


def fetch_json(url: str, *, retries: int = 5, backoff: float = 1.0, timeout: float = 60.0, manual: str = ""):
    """The JSON document at `url` (or in a local file), with the retries of `fetch`."""
    path = local_path(url)
    if path is not None:
        if not path.is_file():
            raise _unreachable(url, "no such file", manual)
        return json.loads(path.read_text(encoding="utf-8"))

    def once():
        with _open(url, {"Accept": "application/json"}, timeout) as response:
            body = response.read()
            length = response.headers.get("Content-Length")
            if length is not None and len(body) < int(length):
                raise _Retryable(f"connection closed after {len(body)} of {length} bytes")
            return body

    body = _with_retries(url, once, retries, backoff, manual)
    try:
        return json.loads(body)
    except ValueError as error:
        raise DownloadError(f"{url} did not answer JSON ({error}); check the URL setting") from error


def _open_part(part: Path, append: bool):
    """The .part file for writing, never through a symbolic link; a fresh one replaces whatever had its name."""
    flags = os.O_WRONLY | os.O_NOFOLLOW | (os.O_APPEND if append else os.O_CREAT | os.O_EXCL)
    if not append:
        part.unlink(missing_ok=True)  # removes a link itself, not what it points to
    try:
        return os.fdopen(os.open(part, flags, 0o666), "ab" if append else "wb")
    except OSError as error:
        raise DownloadError(f"cannot write {part} ({error.strerror}); remove it and run again") from None


def _resumable_size(part: Path, verifiable: bool) -> int:
    """Bytes of a leftover .part to resume from: 0 unless it is a regular file and a size or checksum will check
    the result (a .part nothing verifies could hold anything)."""
    try:
        status = os.lstat(part)
    except FileNotFoundError:
        return 0
    if verifiable and stat.S_ISREG(status.st_mode):
        return status.st_size
    part.unlink()
    return 0


def _transfer(url: str, part: Path, timeout: float, progress: bool, size: int | None, checksummed: bool) -> None:
    """One attempt: append to `part` from its current size (HTTP Range), or start over if the server sends all."""
    have = _resumable_size(part, checksummed or size is not None)
    if size is not None and have > size:
        part.unlink()
        have = 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        response = _open(url, headers, timeout, checksummed)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # the .part is already whole; the size or checksum decides
            return
        raise
    with response:
        resuming = have > 0 and response.status == 206
        start = re.match(r"bytes (\d+)-", response.headers.get("Content-Range") or "")
        if resuming and start and int(start.group(1)) != have:
            part.unlink()
            raise _Retryable(f"asked to resume at byte {have}, got a range from byte {start.group(1)}; starting over")
        if have and not resuming:
            log.info("%s ignored the Range request; starting over", url)
            have = 0
        length = response.headers.get("Content-Length")
        expected = int(length) if length is not None else None
        total = have + expected if expected is not None else size
        received = 0
        with _open_part(part, append=resuming) as out, \
                tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024, leave=False,
                     desc=PurePosixPath(urllib.parse.urlparse(url).path).name[:40],
                     disable=None if progress else True) as bar:
            for block in iter(lambda: response.read(CHUNK), b""):
                received += len(block)
                if size is not None and have + received > size:
                    raise DownloadError(f"{url} sent more than the {size} bytes its source lists; refused")
                out.write(block)
                bar.update(len(block))
    if expected is not None and received < expected:
        raise _Retryable(f"connection closed after {have + received} of {have + expected} bytes")


def _copy_local(source: Path, part: Path, url: str, manual: str) -> None:
    if not source.is_file():
        raise _unreachable(url, "no such file", manual)
    with open(source, "rb") as original, _open_part(part, append=False) as out:
        shutil.copyfileobj(original, out, CHUNK)


def fetch(url: str, dest: str | Path, checksum: str | None = None, *, size: int | None = None, retries: int = 5,
          backoff: float = 1.0, timeout: float = 60.0, progress: bool = True, manual: str = "") -> Path:
    """Download `url` to `dest` through `dest.part`: resume a partial .part over HTTP Range, retry transient
    failures (5xx, reset connections, short bodies) `retries` times with exponential backoff, verify
    `checksum` ('md5:HEX' or 'sha256:HEX') and only then rename onto `dest`. A `file://` URL or a plain path is
    copied. An existing `dest` that verifies against `checksum`/`size` is kept as is.

    Raises UnreachableError (host unreachable; its message includes `manual`), ChecksumError (the .part is
    deleted) or DownloadError (anything else that retries cannot fix)."""
    dest = Path(dest)
    expected = parse_checksum(checksum)
    if dest.is_file() and (expected is not None or size is not None) and (
            size is None or dest.stat().st_size == size) and (
            expected is None or file_digest(dest, expected[0]) == expected[1]):
        return dest
    source = local_path(url)
    if source is None:
        check_url(url, expected is not None)  # before anything is written
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if source is not None:
        _copy_local(source, part, url, manual)
    else:
        _with_retries(url, lambda: _transfer(url, part, timeout, progress, size, expected is not None), retries,
                      backoff, manual)
    if expected is not None:
        algorithm, want = expected
        got = file_digest(part, algorithm)
        if got != want:
            part.unlink()
            raise ChecksumError(f"checksum mismatch for {url}: expected {algorithm}:{want}, got {algorithm}:{got}; "
                                f"the download was deleted and nothing was unpacked or installed. Run again to "
                                f"download it afresh; if it fails again, the mirror serves a different file.")
    if size is not None and part.stat().st_size != size:
        got_size = part.stat().st_size
        part.unlink()
        raise DownloadError(f"{url}: got {got_size} bytes, expected {size}; the partial file was deleted. "
                            f"Run again to download it afresh.")
    os.replace(part, dest)
    return dest


# --------------------------------------------------------------------------------------------------------------
# Install markers: what a complete install holds, so a second run can check it and skip


def read_marker(root: Path) -> dict | None:
    """The marker a complete (or partial, `complete: false`) install left in `root`; None when absent/unreadable."""
    try:
        return json.loads((Path(root) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_marker(root: Path, corpus: str, source: str, files: dict[str, int], complete: bool) -> None:
    """Write the marker atomically: corpus, source URL, count and {relative path: size} of the files."""
    marker = {"corpus": corpus, "source": source, "complete": complete, "count": len(files),
              "files": dict(sorted(files.items()))}
    write_text(Path(root) / MARKER, json.dumps(marker, indent=1) + "\n")


def verify_install(root: str | Path, expected: int) -> str | None:
    """None when `root` holds a complete install of `expected` clips (.wav), every recorded file present with
    its recorded size; otherwise why not."""
    root = Path(root)
    marker = read_marker(root)
    if marker is None:
        return f"no {MARKER} in {root}"
    if not marker.get("complete"):
        return "the last download did not finish"
    files = marker.get("files", {})
    clips = sum(1 for relative in files if relative.lower().endswith(".wav"))
    if clips != expected:
        return f"{clips} clips installed, {expected} expected"
    for relative, size in files.items():
        path = root / relative
        if not path.is_file() or path.stat().st_size != size:
            return f"{path} is missing or changed"
    return None


def _already_installed(name: str, root: Path, expected: int) -> bool:
    """True (and say so) when `root` is a verified install, or holds enough clips installed by hand."""
    problem = verify_install(root, expected)
    if problem is None:
        log.info("%s: %d files already installed and verified in %s; nothing to download", name, expected, root)
        return True
    if read_marker(root) is None and root.is_dir():
        # Any format the loader reads counts (a copy converted to FLAC, say); imported here so
        # that this module itself needs no audio libraries.
        from emotion_lightning.data.audio import find_audio_files

        found = len(find_audio_files(root))
        if found >= expected:
            log.info("%s: found %d clips in %s (installed by hand); nothing to download", name, found, root)
            return True
    if root.is_dir():
        log.info("%s: not complete yet (%s); downloading", name, problem)
    return False


def announce(corpus: str) -> None:
    """Print the corpus's license and citation; called before its download starts."""
    print(LICENSES[corpus].text(), flush=True)


def _relative(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _safe_join(root: Path, relative: str, url: str) -> Path:
    """`root/relative` for a path taken from a file list, refusing ones that would leave `root`."""
    parts = PurePosixPath(relative.replace("\\", "/")).parts
    if not parts or any(part in ("..", "") for part in parts) or PurePosixPath(relative).is_absolute():
        raise DownloadError(f"{url} lists a file outside the corpus folder: {relative!r}")
    return root.joinpath(*parts)


def check_audio(path: Path, origin: str) -> None:
    """DownloadError unless `path` starts with a readable audio header (read, not decoded): a clip that only has
    the right name is not installed as verified. Imported here so that this module itself needs no audio
    libraries."""
    from emotion_lightning.data.audio import AudioError, probe

    try:
        probe(path)
    except AudioError as error:
        raise DownloadError(f"{origin} is not audio ({error}); the source is damaged or not the corpus") from None


# --------------------------------------------------------------------------------------------------------------
# Many files at once (CREMA-D, TESS)


@dataclass(frozen=True)
class RemoteFile:
    """One file of a per-file corpus: where it comes from, where it goes (relative to the corpus root)."""

    url: str
    relative: str
    checksum: str | None = None
    size: int | None = None


def fetch_many(name: str, root: Path, files: list[RemoteFile], source: str, *, workers: int = 8,
               retries: int = 5, backoff: float = 1.0, timeout: float = 60.0, progress: bool = True,
               manual: str = "", save_every: int = 200, check=None) -> dict[str, int]:
    """Download `files` into `root` concurrently, each through its own .part name and with retries.

    Resumable: the marker (written atomically every `save_every` finished files and when stopping) lists the
    finished files with their sizes; those still present with that size, or with the size the file list
    gives, are skipped. `check(path)` may reject a finished file (raise DownloadError). Returns
    {relative path: size} of every file; raises DownloadError naming the failed files after all were tried."""
    marker = read_marker(root) or {}
    done: dict[str, int] = {rel: size for rel, size in marker.get("files", {}).items()
                            if marker.get("source") == source}
    wanted = {f.relative for f in files}
    done = {rel: size for rel, size in done.items() if rel in wanted}
    todo = []
    for remote in files:
        path = _safe_join(root, remote.relative, source)
        size = path.stat().st_size if path.is_file() else None
        if size is not None and size == (remote.size if remote.size is not None else done.get(remote.relative)):
            done[remote.relative] = size
        else:
            done.pop(remote.relative, None)
            todo.append(remote)
    if not todo:
        return done
    log.info("%s: %d of %d files to download (%d already here)", name, len(todo), len(files), len(files) - len(todo))

    def one(remote: RemoteFile) -> tuple[RemoteFile, int]:
        path = fetch(remote.url, root / remote.relative, remote.checksum, size=remote.size, retries=retries,
                     backoff=backoff, timeout=timeout, progress=False, manual=manual)
        if check is not None:
            try:
                check(path, remote)
            except DownloadError:
                path.unlink()
                raise
        return remote, path.stat().st_size

    failures: list[DownloadError] = []
    since_save = 0
    root.mkdir(parents=True, exist_ok=True)
    executor = ThreadPoolExecutor(max_workers=max(1, int(workers)))
    try:
        futures = [executor.submit(one, remote) for remote in todo]
        with tqdm(total=len(files), initial=len(files) - len(todo), unit="file", desc=name,
                  disable=None if progress else True) as bar:
            for future in as_completed(futures):
                try:
                    remote, size = future.result()
                except UnreachableError:
                    for pending in futures:
                        pending.cancel()
                    raise
                except DownloadError as error:
                    failures.append(error)
                else:
                    done[remote.relative] = size
                    since_save += 1
                    if since_save >= save_every:
                        write_marker(root, name, source, done, complete=False)
                        since_save = 0
                bar.update(1)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        if done:
            write_marker(root, name, source, done, complete=False)
    if failures:
        listed = "\n".join(f"  - {error}" for error in failures[:5])
        more = f"\n  ... and {len(failures) - 5} more" if len(failures) > 5 else ""
        raise DownloadError(f"{name}: {len(failures)} of {len(files)} files failed; the {len(done)} finished ones "
                            f"are kept and a second run resumes with the rest:\n{listed}{more}")
    return done


def _finish(name: str, root: Path, source: str, files: dict[str, int], expected: int) -> int:
    clips = sum(1 for relative in files if relative.lower().endswith(".wav"))
    if clips != expected:
        raise DownloadError(f"{name}: {clips} clips installed in {root}, {expected} expected; run again to resume, "
                            f"or set the expected count if the source changed.")
    write_marker(root, name, source, files, complete=True)
    log.info("%s: %d clips installed and verified in %s", name, clips, root)
    return clips


# --------------------------------------------------------------------------------------------------------------
# The three sources


@dataclass
class Ravdess:
    """RAVDESS speech: one zip from a Zenodo record, checksum from the record's API, unpacked into
    DATA_DIR/ravdess/Audio_Speech_Actors_01-24/Actor_XX/*.wav. `archive_url` (and `checksum`) override the
    record, for a mirror or a local copy of the zip; with `record_url: null` the checksum is optional."""

    record_url: str | None = "https://zenodo.org/api/records/1188976"
    archive: str = "Audio_Speech_Actors_01-24.zip"
    archive_url: str | None = None
    checksum: str | None = None
    expected: int = 1440
    keep_archive: bool = False
    max_unpacked_mb: float = 2000

    name = "ravdess"
    # Actor_XX/03-01-EE-II-SS-RR-AA.wav, at the zip's root or inside one folder; nothing else is unpacked.
    clip_name = re.compile(r"(?:[\w -]+/)?(Actor_\d\d/\d\d(?:-\d\d){6}\.wav)")

    def archive_source(self, root: Path, retries: int, backoff: float,
                       timeout: float) -> tuple[str, str | None, int | None]:
        """(URL, checksum, size) of the zip, from the Zenodo record unless given directly. A local copy (a path or
        file:// URL) never asks the record, which an offline machine cannot reach: the clip count after unpacking
        checks it, and `checksum` too when given."""
        local = self.archive_url and urllib.parse.urlparse(str(self.archive_url)).scheme in ("", "file")
        if self.archive_url and (self.checksum or not self.record_url or local):
            return self.archive_url, self.checksum, None
        if not self.record_url:
            raise DownloadError("ravdess: set sources.ravdess.record_url or sources.ravdess.archive_url")
        record = fetch_json(self.record_url, retries=retries, backoff=backoff, timeout=timeout,
                            manual=manual_steps("ravdess", root))
        for entry in record.get("files", []) if isinstance(record, dict) else []:
            if entry.get("key") == self.archive:
                links = entry.get("links", {})
                url = self.archive_url or links.get("self") or links.get("content") or links.get("download")
                if not url:
                    raise DownloadError(f"{self.record_url}: the entry for {self.archive} has no download link")
                if not self.archive_url and urllib.parse.urlparse(str(url)).scheme not in ("http", "https"):
                    raise DownloadError(f"{self.record_url}: the link for {self.archive} is {url!r}, not an "
                                        "http(s) URL; refused")
                return url, self.checksum or entry.get("checksum"), entry.get("size")
        raise DownloadError(f"{self.record_url} lists no file named {self.archive}; check "
                            f"sources.ravdess.record_url and sources.ravdess.archive")

    def install(self, data_dir: str | Path, *, retries: int = 5, backoff: float = 1.0, timeout: float = 60.0,
                progress: bool = True) -> int:
        """Download, verify and unpack; returns the number of clips installed (or found installed)."""
        data_dir = Path(data_dir)
        root = data_dir / "ravdess"
        if _already_installed(self.name, root, self.expected):
            return self.expected
        announce(self.name)
        url, checksum, size = self.archive_source(root, retries, backoff, timeout)
        if checksum is None:
            log.warning("ravdess: no checksum for %s; the archive is checked only by unpacking it", url)
        zip_path = fetch(url, root / self.archive, checksum, size=size, retries=retries, backoff=backoff,
                         timeout=timeout, progress=progress, manual=manual_steps("ravdess", root))
        target = root / PurePosixPath(self.archive).stem
        # the user's own zip, given where the download would land, is theirs: never deleted
        own_copy = bool(self.archive_url) and Path(str(self.archive_url).removeprefix("file://")).resolve() == \
            zip_path.resolve()
        try:
            files = self.unpack(zip_path, data_dir, target)
        except Exception:  # nothing of a failed unpack stays: not the zip, not an empty corpus folder
            if not (own_copy or self.keep_archive):
                zip_path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                root.rmdir()
            raise
        count = _finish(self.name, root, self.record_url or url, files, self.expected)
        if not (own_copy or self.keep_archive):
            zip_path.unlink()
        return count

    def unpack(self, zip_path: Path, data_dir: Path, target: Path) -> dict[str, int]:
        """Unzip the clips (names of RAVDESS's layout only) into a hidden folder beside the corpus (never read by
        the loader), check their count and audio headers, then rename it onto `target`; returns {path relative
        to the corpus root: size}. Refused before anything is written: duplicate clips, more than
        max_unpacked_mb in all, or more than the free disk space."""
        for stale in data_dir.glob(".ravdess-unpack-*"):
            shutil.rmtree(stale, ignore_errors=True)
        staging = temporary_dir(data_dir, prefix=".ravdess-unpack-")  # not mkdtemp: its 0700 would stick
        try:
            try:
                with zipfile.ZipFile(zip_path) as archive:
                    clips = self.clips_in(archive, zip_path, data_dir)
                    for relative, entry in clips.items():  # zipfile stops each at the size it declares
                        (staging / relative).parent.mkdir(parents=True, exist_ok=True)
                        with archive.open(entry) as source, open(staging / relative, "xb") as out:
                            shutil.copyfileobj(source, out, CHUNK)
            except (zipfile.BadZipFile, zlib.error, EOFError) as error:  # a bad directory, or corrupt deflate data
                raise DownloadError(f"{zip_path} is not a readable zip ({type(error).__name__}: {error}); delete it "
                                    "and run again") from error
            if len(clips) != self.expected:
                raise DownloadError(f"{zip_path} holds {len(clips)} clips in Actor_XX/ folders, {self.expected} "
                                    f"expected; delete it and run again, or set sources.ravdess.expected.")
            for relative in clips:
                check_audio(staging / relative, f"{zip_path}: {relative}")
            if target.exists():
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        root = target.parent
        return {_relative(root, path): path.stat().st_size for path in target.rglob("*") if path.is_file()}

    def clips_in(self, archive: zipfile.ZipFile, zip_path: Path, data_dir: Path) -> dict[str, zipfile.ZipInfo]:
        """{Actor_XX/NAME.wav: entry} of the archive's clips; other entries are left out (and counted in the log)."""
        clips, others = {}, []
        for entry in (entry for entry in archive.infolist() if not entry.is_dir()):
            match = self.clip_name.fullmatch(entry.filename)
            if match is None:
                others.append(entry.filename)
            elif match.group(1) in clips:
                raise DownloadError(f"{zip_path} holds {match.group(1)} twice; it is not RAVDESS's archive, delete it")
            else:
                clips[match.group(1)] = entry
        if others:
            log.warning("%s: %d entries outside Actor_XX/NN-NN-NN-NN-NN-NN-NN.wav left out (e.g. %r)", zip_path,
                        len(others), others[0])
        declared = sum(entry.file_size for entry in clips.values())
        if declared > self.max_unpacked_mb * 2**20:
            raise DownloadError(f"{zip_path} would unpack to {declared / 2**20:,.0f} MB, more than "
                                f"sources.ravdess.max_unpacked_mb={self.max_unpacked_mb:g}; it is not RAVDESS's "
                                "archive, delete it")
        free = shutil.disk_usage(data_dir).free
        if declared > free:
            raise DownloadError(f"{zip_path} unpacks to {declared / 2**20:,.0f} MB, but {data_dir} has only "
                                f"{free / 2**20:,.0f} MB free; free some space and run again")
        return clips


def _check_clip(path: Path, remote: RemoteFile) -> None:
    """A downloaded .wav must be audio: a Git LFS pointer (CREMA-D's wrong URL) is named as such."""
    if not remote.relative.lower().endswith(".wav"):
        return
    with open(path, "rb") as handle:
        head = handle.read(len(LFS_POINTER_PREFIX))
    if head == LFS_POINTER_PREFIX:
        raise DownloadError(f"{remote.url} served a Git LFS pointer, not the audio; sources.crema_d.media_url "
                            f"must serve LFS content (https://media.githubusercontent.com/media/...)")
    check_audio(path, remote.url)


@dataclass
class CremaD:
    """CREMA-D: AudioWAV/*.wav (Git LFS, from `media_url`) and VideoDemographics.csv (from `raw_url`), file
    list from the GitHub tree API, fetched concurrently into DATA_DIR/crema_d/. GitHub publishes no checksum
    for LFS files: each file is checked against its Content-Length and each clip for an audio header (not an
    LFS pointer); only names of the form AudioWAV/AAAA_SSS_EEE_LL.wav are fetched."""

    tree_url: str = ("https://api.github.com/repos/CheyneyComputerScience/CREMA-D/git/trees/master?recursive=1")
    media_url: str = "https://media.githubusercontent.com/media/CheyneyComputerScience/CREMA-D/master/"
    raw_url: str = "https://raw.githubusercontent.com/CheyneyComputerScience/CREMA-D/master/"
    audio_dir: str = "AudioWAV"
    extra_files: tuple[str, ...] = ("VideoDemographics.csv",)
    expected: int = 7442

    name = "crema_d"
    clip_name = re.compile(r"\d{4}_[A-Z]{3}_[A-Z]{3}_[A-Z]{2}\.wav")

    def file_list(self, root: Path, retries: int, backoff: float, timeout: float) -> list[RemoteFile]:
        tree = fetch_json(self.tree_url, retries=retries, backoff=backoff, timeout=timeout,
                          manual=manual_steps("crema_d", root))
        if not isinstance(tree, dict) or "tree" not in tree:
            raise DownloadError(f"{self.tree_url} is not a GitHub tree listing (no 'tree' key)")
        if tree.get("truncated"):
            raise DownloadError(f"{self.tree_url}: GitHub truncated the file list; use a mirror's full listing")
        blobs = {entry["path"] for entry in tree["tree"] if entry.get("type") == "blob"}
        audio = sorted(p for p in blobs if p.startswith(self.audio_dir + "/")
                       and self.clip_name.fullmatch(p[len(self.audio_dir) + 1:]))
        if len(audio) != self.expected:
            raise DownloadError(f"{self.tree_url} lists {len(audio)} clips under {self.audio_dir}/, {self.expected} "
                                f"expected; check sources.crema_d.tree_url or set sources.crema_d.expected")
        missing = [p for p in self.extra_files if p not in blobs]
        if missing:
            raise DownloadError(f"{self.tree_url} does not list {', '.join(missing)}")
        join = lambda base, path: base.rstrip("/") + "/" + urllib.parse.quote(path)  # noqa: E731
        return ([RemoteFile(join(self.media_url, p), p) for p in audio]
                + [RemoteFile(join(self.raw_url, p), p) for p in self.extra_files])

    def install(self, data_dir: str | Path, *, workers: int = 8, retries: int = 5, backoff: float = 1.0,
                timeout: float = 60.0, progress: bool = True, save_every: int = 200) -> int:
        root = Path(data_dir) / "crema_d"
        if _already_installed(self.name, root, self.expected):
            return self.expected
        announce(self.name)
        files = self.file_list(root, retries, backoff, timeout)
        done = fetch_many(self.name, root, files, self.tree_url, workers=workers, retries=retries, backoff=backoff,
                          timeout=timeout, progress=progress, manual=manual_steps("crema_d", root),
                          save_every=save_every, check=_check_clip)
        return _finish(self.name, root, self.tree_url, done, self.expected)


TESS_FOLDER_EMOTIONS = {"ps": "pleasant_surprised"}


def tess_folder(filename: str) -> str:
    """The folder a TESS clip belongs in, from its name when the dataset gives no folder:
    OAF_back_angry.wav -> OAF_angry; a `ps` clip -> OAF_pleasant_surprised (a spelling the Tess parser reads)."""
    parts = PurePosixPath(filename).stem.split("_")
    if len(parts) < 3:
        raise DownloadError(f"TESS file name {filename!r} is not <SPK>_<word>_<emotion>.wav")
    emotion = parts[-1].lower()
    return f"{parts[0].upper()}_{TESS_FOLDER_EMOTIONS.get(emotion, emotion)}"


@dataclass
class Tess:
    """TESS: every .wav of a Dataverse dataset, listed by the dataset API and fetched per file from
    `file_url` (with `{id}`), verified by the md5 the API publishes and an audio header, into
    DATA_DIR/tess/<SPK>_<emotion>/<name>.wav (names of letters, digits, _, ', - and spaces only)."""

    dataset_url: str = ("https://borealisdata.ca/api/datasets/:persistentId/"
                        "?persistentId=doi:10.5683/SP2/E8H2MF")
    file_url: str = "https://borealisdata.ca/api/access/datafile/{id}"
    expected: int = 2800

    name = "tess"
    clip_path = re.compile(r"(?i)(OAF|YAF)_[\w -]+/[\w' -]+\.wav")

    def file_list(self, root: Path, retries: int, backoff: float, timeout: float) -> list[RemoteFile]:
        dataset = fetch_json(self.dataset_url, retries=retries, backoff=backoff, timeout=timeout,
                             manual=manual_steps("tess", root))
        try:
            entries = dataset["data"]["latestVersion"]["files"]
        except (KeyError, TypeError) as error:
            raise DownloadError(f"{self.dataset_url} is not a Dataverse dataset (no data.latestVersion.files)") \
                from error
        files = []
        for entry in entries:
            data_file = entry.get("dataFile", {})
            filename = data_file.get("filename", "")
            if not filename.lower().endswith(".wav"):
                continue
            folder = PurePosixPath(entry.get("directoryLabel") or "").name
            if not re.match(r"(?i)^(OAF|YAF)_", folder):
                folder = tess_folder(filename)
            md5 = data_file.get("md5") or (data_file.get("checksum") or {}).get("value")
            checksum_type = ((data_file.get("checksum") or {}).get("type") or "md5").lower().replace("-", "")
            checksum = f"{checksum_type}:{md5}" if md5 and checksum_type in ("md5", "sha256") else None
            if not self.clip_path.fullmatch(f"{folder}/{filename}") or not str(data_file.get("id")).isdigit():
                raise DownloadError(f"{self.dataset_url} lists {folder}/{filename!r} (id {data_file.get('id')!r}), "
                                    "not a TESS clip; check sources.tess.dataset_url")
            files.append(RemoteFile(self.file_url.format(id=data_file["id"]), f"{folder}/{filename}", checksum,
                                    data_file.get("filesize")))
        if len(files) != self.expected:
            raise DownloadError(f"{self.dataset_url} lists {len(files)} clips, {self.expected} expected; check "
                                f"sources.tess.dataset_url or set sources.tess.expected")
        return files

    def install(self, data_dir: str | Path, *, workers: int = 8, retries: int = 5, backoff: float = 1.0,
                timeout: float = 60.0, progress: bool = True, save_every: int = 200) -> int:
        root = Path(data_dir) / "tess"
        if _already_installed(self.name, root, self.expected):
            return self.expected
        announce(self.name)
        files = self.file_list(root, retries, backoff, timeout)
        done = fetch_many(self.name, root, files, self.dataset_url, workers=workers, retries=retries,
                          backoff=backoff, timeout=timeout, progress=progress, manual=manual_steps("tess", root),
                          save_every=save_every, check=_check_clip)
        return _finish(self.name, root, self.dataset_url, done, self.expected)


SOURCES = {"ravdess": Ravdess, "crema_d": CremaD, "tess": Tess}


def download(corpus: str, data_dir: str | Path, sources: dict | None = None, *, workers: int = 8, retries: int = 5,
             backoff: float = 1.0, timeout: float = 60.0, progress: bool = True) -> dict[str, int]:
    """Install `corpus` ('ravdess', 'crema_d', 'tess' or 'all') into `data_dir`; `sources` maps a corpus name
    to the keyword arguments of its source class (URLs, expected count). Returns {corpus: clips}."""
    names = list(CORPORA) if corpus == "all" else [corpus]
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        raise DownloadError(f"corpus={corpus!r} is not one of {', '.join(CORPORA)}, all")
    sources = sources or {}
    counts = {}
    for name in names:
        try:
            source = SOURCES[name](**dict(sources.get(name) or {}))
        except TypeError as error:  # an unknown key under sources.<name>
            raise DownloadError(f"sources.{name}: {error}") from error
        options = {"retries": retries, "backoff": backoff, "timeout": timeout, "progress": progress}
        if name != "ravdess":
            options["workers"] = workers
        try:
            counts[name] = source.install(data_dir, **options)
        except (FileExistsError, NotADirectoryError, IsADirectoryError) as error:
            raise DownloadError(f"{name}: cannot write {error.filename} ({error.strerror}): a file and a folder "
                                "want the same name there; move it away and run again") from error
    return counts
