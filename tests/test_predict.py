"""Prediction on fixture audio: formats, rates, channels, long recordings, folders with a corrupt file, CLI.

The fixture model learnt steady tones, which a voice-activity detector rightly calls no speech, so the tests
about decoding and windowing run with vad=none (the silence floor alone); speech detection with the trained
model and both backends is tested at the end, and without training in tests/test_inference_inputs.py.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import emotion_lightning.data.audio as audio
from emotion_lightning.data.audio import AudioError
from emotion_lightning.inference.predictor import EmotionPredictor
from emotion_lightning.inference.windows import window_starts
from tests.helpers.audio import tone, write_clip

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]


@pytest.fixture(scope="module")
def predictor(trained_checkpoint) -> EmotionPredictor:
    return EmotionPredictor.from_checkpoint(trained_checkpoint, batch_size=4, vad="none")


def check_distribution(result: dict) -> None:
    assert list(result["probabilities"]) == CLASSES
    assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert result["emotion"] == max(result["probabilities"], key=result["probabilities"].get)
    assert result["confidence"] == result["probabilities"][result["emotion"]]


def test_window_starts_cover_the_recording_with_overlap():
    assert window_starts(100, 300, 150) == [0]  # short: one window, padded
    assert window_starts(300, 300, 150) == [0]
    assert window_starts(750, 300, 150) == [0, 150, 300, 450]  # the last one ends at the end
    assert window_starts(800, 300, 150) == [0, 150, 300, 450, 500]
    with pytest.raises(ValueError, match="hop <= window"):
        window_starts(800, 300, 400)


@pytest.mark.parametrize("name, rate, channels, fmt, subtype", [
    ("clip.wav", 48000, 2, "WAV", "PCM_16"),
    ("clip.flac", 22050, 1, "FLAC", None),
    ("clip.ogg", 44100, 2, "OGG", "VORBIS"),
    ("clip.opus", 48000, 1, "OGG", "OPUS"),
    ("clip.mp3", 44100, 2, "MP3", None),
])
def test_every_soundfile_format_rate_and_channel_count(predictor, tmp_path, name, rate, channels, fmt, subtype):
    signal = tone("angry", 1.0, rate, seed=1)
    sf.write(tmp_path / name, np.stack([signal] * channels, axis=1), rate, format=fmt, subtype=subtype)
    result = predictor.predict_file(tmp_path / name)
    check_distribution(result)
    assert result["file"] == str(tmp_path / name)
    assert result["duration"] == pytest.approx(1.0, abs=0.06)  # lossy codecs add a few ms of padding
    assert len(result["windows"]) == 1 and result["windows"][0]["start"] == 0.0


def test_stereo_is_mixed_to_mono_and_any_rate_is_resampled(predictor):
    mono = tone("sad", 1.0, 16000, seed=2)
    reference = predictor.predict_array(mono, 16000)
    stereo = predictor.predict_array(np.stack([mono * 0.5, mono * 1.5], axis=1), 16000)  # mean = mono
    assert stereo["probabilities"] == pytest.approx(reference["probabilities"], abs=1e-6)
    resampled = predictor.predict_array(tone("sad", 1.0, 44100, seed=2), 44100)
    assert resampled["duration"] == pytest.approx(1.0)
    assert resampled["probabilities"] == pytest.approx(reference["probabilities"], abs=0.02)


def test_long_recording_gets_a_window_timeline_and_their_mean(predictor):
    result = predictor.predict_array(tone("happy", 8.0, 16000, seed=3), 16000)
    check_distribution(result)
    windows = result["windows"]
    assert [w["start"] for w in windows] == [0.0, 1.5, 3.0, 4.5, 5.0]  # 3 s windows, 1.5 s hop, last at the end
    assert [w["end"] for w in windows] == [3.0, 4.5, 6.0, 7.5, 8.0]
    for window in windows:
        check_distribution(window)
    mean = np.mean([list(w["probabilities"].values()) for w in windows], axis=0)
    assert list(result["probabilities"].values()) == pytest.approx(mean.tolist(), abs=1e-6)


def test_hop_setting_and_batches_give_the_same_windows(predictor):
    def with_batches(batch_size):
        return EmotionPredictor(predictor.backend, predictor.classes, 16000, window_seconds=3.0, hop_seconds=1.0,
                                batch_size=batch_size, vad="none")

    result = with_batches(1).predict_array(tone("calm", 5.0, 16000, seed=4), 16000)
    assert [w["start"] for w in result["windows"]] == [0.0, 1.0, 2.0]
    again = with_batches(8).predict_array(tone("calm", 5.0, 16000, seed=4), 16000)
    assert again["probabilities"] == pytest.approx(result["probabilities"], abs=1e-5)


def test_unusable_arrays_raise_audio_errors(predictor):
    with pytest.raises(AudioError, match="no audio samples"):
        predictor.predict_array(np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match="NaN"):
        predictor.predict_array(np.full(1000, np.nan, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match="shape"):
        predictor.predict_array(np.zeros((2, 2, 2), dtype=np.float32), 16000)


def test_m4a_without_ffmpeg_says_what_to_install(predictor, tmp_path, monkeypatch):
    (tmp_path / "voice.m4a").write_bytes(b"\x00\x00\x00\x18ftypM4A " + bytes(200))
    monkeypatch.setattr(audio, "ffmpeg_executable", lambda: None)
    with pytest.raises(AudioError, match=r"\.m4a audio needs ffmpeg.*install ffmpeg"):
        predictor.predict_file(tmp_path / "voice.m4a")


def test_m4a_decodes_through_ffmpeg_when_installed(predictor, tmp_path):
    executable = audio.ffmpeg_executable()
    if executable is None:
        pytest.skip("no ffmpeg on PATH and imageio-ffmpeg not installed (pip install 'emotion-lightning[m4a]')")
    source = write_clip(tmp_path / "source.wav", "fearful", seconds=1.0, sample_rate=44100)
    subprocess.run([executable, "-v", "error", "-i", str(source), "-c:a", "aac", str(tmp_path / "voice.m4a")],
                   check=True)
    result = predictor.predict_file(tmp_path / "voice.m4a")
    check_distribution(result)
    assert result["duration"] == pytest.approx(1.0, abs=0.06)


def test_folder_with_a_corrupt_file_through_the_command(trained_checkpoint, onnx_export, tmp_path):
    folder = tmp_path / "recordings"
    write_clip(folder / "a_short.wav", "neutral", seconds=0.5)
    write_clip(folder / "b_long.flac", "angry", seconds=7.5, sample_rate=22050)
    write_clip(folder / "nested" / "c.mp3", "sad", seconds=1.0, sample_rate=44100)
    (folder / "b_corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk")
    (folder / "notes.txt").write_text("not audio, not listed")
    output = tmp_path / "out" / "predictions.json"
    result = subprocess.run([sys.executable, "-m", "emotion_lightning.predict", f"ckpt={trained_checkpoint}",
                             f"audio={folder}", f"output={output}", "backend=onnx", "batch_size=3", "vad=none"],
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]  # one file failed
    report = json.loads(output.read_text())
    assert (report["backend"], report["files"], report["failed"]) == ("onnx", 4, 1)
    assert report["classes"] == CLASSES and report["window_seconds"] == 3.0 and report["hop_seconds"] == 1.5
    by_name = {Path(p["file"]).name: p for p in report["predictions"]}
    assert [Path(p["file"]).name for p in report["predictions"]] == ["a_short.wav", "b_corrupt.wav", "b_long.flac",
                                                                      "c.mp3"]
    assert "cannot decode audio" in by_name["b_corrupt.wav"]["error"] and "emotion" not in by_name["b_corrupt.wav"]
    for name in ("a_short.wav", "b_long.flac", "c.mp3"):
        check_distribution(by_name[name])
    assert [w["start"] for w in by_name["b_long.flac"]["windows"]] == [0.0, 1.5, 3.0, 4.5]
    assert not list(tmp_path.glob("outputs")), "predict must not leave a Hydra run dir behind"
    assert (result.stdout + result.stderr).count("b_corrupt.wav: cannot decode audio") == 1  # printed once


def test_missing_audio_path_and_empty_folder_get_entries_saying_so(predictor, tmp_path):
    from emotion_lightning.inference.predictor import input_files

    (tmp_path / "empty").mkdir()
    files = input_files([str(tmp_path / "nowhere.wav"), str(tmp_path / "empty")])
    assert files == [tmp_path / "nowhere.wav", tmp_path / "empty"]
    missing, empty = predictor.predict_files(files)
    assert missing == {"file": str(tmp_path / "nowhere.wav"), "error": "file not found; check the path"}
    assert empty["error"].startswith("a folder with no audio files (.wav, .flac, .ogg, .opus, .mp3, .m4a")


def test_unknown_settings_are_named(trained_checkpoint, onnx_export):
    with pytest.raises(ValueError, match="device='gpu'; use cpu, cuda or auto"):
        EmotionPredictor.from_checkpoint(trained_checkpoint, device="gpu")
    with pytest.raises(ValueError, match="device='gpu'"):
        EmotionPredictor.from_onnx(onnx_export, device="gpu")
    with pytest.raises(ValueError, match="backend='tflite'; use torch or onnx"):
        EmotionPredictor.from_checkpoint(trained_checkpoint, backend="tflite")
    with pytest.raises(FileNotFoundError, match="missing.onnx does not exist"):
        EmotionPredictor.from_checkpoint(trained_checkpoint.with_name("missing.onnx"))
    with pytest.raises(FileNotFoundError, match="missing.ckpt does not exist"):
        EmotionPredictor.from_checkpoint(trained_checkpoint.with_name("missing.ckpt"), backend="onnx")


def test_torch_and_onnx_agree_on_speech_silence_and_their_mix(trained_checkpoint, onnx_export):
    from tests.helpers.audio import speech_like

    silence, dc = np.zeros(3 * 16000, np.float32), np.full(3 * 16000, 0.25, np.float32)
    mix = np.concatenate([np.zeros(4 * 16000, np.float32), speech_like(3.0)])
    backends = [EmotionPredictor.from_checkpoint(trained_checkpoint), EmotionPredictor.from_onnx(onnx_export)]
    for waveform in (silence, dc):
        for predictor in backends:  # the issue: fearful 0.995 from PyTorch, surprised 0.463 from ONNX
            result = predictor.predict_array(waveform, 16000)
            assert (result["emotion"], result["no_speech"]) == (None, True)
    torch_result, onnx_result = (predictor.predict_array(mix, 16000) for predictor in backends)
    assert [w["speech"] for w in torch_result["windows"]] == [w["speech"] for w in onnx_result["windows"]] \
        == [False, True, True, True]
    assert onnx_result["emotion"] == torch_result["emotion"] is not None
    assert onnx_result["probabilities"] == pytest.approx(torch_result["probabilities"], abs=1e-4)


def test_command_answers_every_requested_path_and_exits_by_outcome(trained_checkpoint, tmp_path):
    from tests.helpers.audio import speech_like

    folder_a, folder_b = tmp_path / "a", tmp_path / "b"
    for path in (folder_a / "speech.wav", folder_b / "nested" / "speech.flac"):
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, speech_like(1.5), 16000)
    sf.write(folder_a / "silence.wav", np.zeros(32000), 16000)
    sf.write(folder_b / "click.wav", np.r_[0.9, np.zeros(1599)], 16000)  # 0.1 s
    (folder_a / "folder.wav").mkdir()
    (folder_b / "dangling.wav").symlink_to(tmp_path / "gone.wav")

    def run(audio: str) -> tuple[subprocess.CompletedProcess, dict]:
        output = tmp_path / "predictions.json"
        output.unlink(missing_ok=True)
        result = subprocess.run([sys.executable, "-m", "emotion_lightning.predict", f"ckpt={trained_checkpoint}",
                                 f"audio={audio}", f"output={output}", "progress=false"], cwd=tmp_path,
                                env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                                timeout=300)
        return result, json.loads(output.read_text()) if output.is_file() else {}

    result, report = run(f"[{folder_a},{folder_b},{tmp_path / 'missing.wav'}]")
    assert result.returncode == 1, result.stderr[-3000:]
    entries = {str(Path(p["file"]).relative_to(tmp_path)): p for p in report["predictions"]}
    assert list(entries) == ["a/folder.wav", "a/silence.wav", "a/speech.wav", "b/click.wav", "b/dangling.wav",
                             "b/nested/speech.flac", "missing.wav"]
    assert (report["files"], report["failed"], report["no_speech"]) == (7, 4, 1)
    assert entries["a/silence.wav"]["emotion"] is None and entries["a/silence.wav"]["no_speech"] is True
    assert entries["a/speech.wav"]["emotion"] in CLASSES and entries["b/nested/speech.flac"]["emotion"] in CLASSES
    assert "min_seconds=0.5" in entries["b/click.wav"]["error"]
    assert entries["missing.wav"]["error"] == "file not found; check the path"
    log = result.stdout + result.stderr
    assert log.count("missing.wav: file not found") == 1 and "System error" not in log

    result, report = run(f"[{tmp_path / 'missing.wav'},{folder_b / 'click.wav'}]")
    assert result.returncode == 2 and report["failed"] == report["files"] == 2
    result, report = run(str(folder_a / "speech.wav"))
    assert result.returncode == 0 and report["predictions"][0]["emotion"] in CLASSES
