"""What the predictor does with silence, short clips, odd arrays and unreadable paths (issue 17).

A stand-in model that is always sure of itself (as a real one was on silence) runs behind the real
predictor, speech detector and service, so these tests need no training and stay in `make test-fast`.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings, strategies as st

from emotion_lightning.data.audio import AudioError
from emotion_lightning.data.errors import SettingError
from emotion_lightning.inference.predictor import EmotionPredictor, input_files
from emotion_lightning.predict import exit_status
from tests.helpers.audio import speech_like, tone, write_clip

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
RATE = 16000


class ConfidentModel:
    """Says `fearful` with high confidence for any window (louder windows a little more); counts its windows."""

    def __init__(self):
        self.windows = 0

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        self.windows += len(windows)
        fearful = 0.9 + 0.09 * np.tanh(np.abs(windows).mean(axis=1))
        probabilities = np.repeat(((1 - fearful) / 7)[:, None], len(CLASSES), axis=1)
        probabilities[:, CLASSES.index("fearful")] = fearful
        return probabilities


def make_predictor(vad: str = "silero", min_seconds: float = 0.5, **kwargs) -> EmotionPredictor:
    return EmotionPredictor(ConfidentModel(), CLASSES, RATE, window_seconds=3.0, vad=vad, min_seconds=min_seconds,
                            **kwargs)


@pytest.fixture(scope="module")
def predictor() -> EmotionPredictor:
    return make_predictor()


def write_speech(path: Path, seconds: float = 1.0, rate: int = RATE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, speech_like(seconds, rate), rate)
    return path


def assert_no_label(result: dict) -> None:
    assert result["emotion"] is None and result["confidence"] is None and result["probabilities"] is None
    assert result["no_speech"] is True
    assert all(not w["speech"] and w["emotion"] is None for w in result["windows"])


# --- speech activity -------------------------------------------------------------------------------------
@pytest.mark.parametrize("vad", ["silero", "none"])
@pytest.mark.parametrize("name, waveform", [
    ("digital silence", np.zeros(3 * RATE, np.float32)),
    ("DC offset", np.full(3 * RATE, 0.4, np.float32)),
    ("DC offset with dither", 0.4 + 1e-5 * np.random.default_rng(0).standard_normal(3 * RATE)),
    ("int16 zeros", np.zeros(3 * RATE, np.int16)),
    ("long silence", np.zeros(10 * RATE, np.float32)),
])
def test_silence_never_gets_a_label_and_the_model_is_not_run(vad, name, waveform):
    predictor = make_predictor(vad)
    result = predictor.predict_array(waveform, RATE)
    assert_no_label(result)
    assert result["duration"] == pytest.approx(len(waveform) / RATE)
    assert predictor.backend.windows == 0


def test_a_steady_tone_is_not_speech_for_the_detector_but_passes_without_one():
    assert_no_label(make_predictor("silero").predict_array(tone("angry", 3.0, RATE, seed=1), RATE))
    assert make_predictor("none").predict_array(tone("angry", 3.0, RATE, seed=1), RATE)["emotion"] == "fearful"


@pytest.mark.parametrize("rate", [8000, 16000, 44100])
def test_speech_gets_a_label(predictor, rate):
    result = predictor.predict_array(speech_like(2.0, rate), rate)
    assert result["emotion"] == "fearful" and result["no_speech"] is False
    assert result["windows"][0]["speech"] is True
    assert sum(result["probabilities"].values()) == pytest.approx(1.0)


def test_windows_without_speech_are_marked_and_left_out_of_the_average():
    predictor = make_predictor()
    waveform = np.concatenate([np.zeros(4 * RATE, np.float32), speech_like(3.0, RATE)])  # 7 s: silence, speech
    result = predictor.predict_array(waveform, RATE)
    windows = result["windows"]
    assert [(w["start"], w["speech"]) for w in windows] == [(0.0, False), (1.5, True), (3.0, True), (4.0, True)]
    assert windows[0]["emotion"] is None and windows[0]["probabilities"] is None
    spoken = [list(w["probabilities"].values()) for w in windows if w["speech"]]
    assert list(result["probabilities"].values()) == pytest.approx(np.mean(spoken, axis=0).tolist())
    assert predictor.backend.windows == 3  # the silent window never reached the model


def test_unknown_vad_setting_and_bad_threshold_are_named():
    # SettingError: the commands print its message alone, without a traceback
    with pytest.raises(SettingError, match="vad='webrtc'; use silero .* or none"):
        make_predictor("webrtc")
    with pytest.raises(SettingError, match="vad_threshold=1.5"):
        make_predictor(vad_threshold=1.5)


@pytest.mark.parametrize("settings, message", [
    ({"window_seconds": 0}, "window_seconds=0; use a positive length in seconds"),
    ({"hop_seconds": 0}, "hop_seconds=0; use more than 0 and at most the window, 3 s"),
    ({"hop_seconds": 6.0}, "hop_seconds=6.0; use more than 0 and at most the window, 3 s"),
])
def test_window_and_hop_of_zero_or_too_long_are_named_in_seconds(settings, message):
    # 0 used to fall back to the default silently (tested as false); a long hop was named in samples
    window = settings.pop("window_seconds", 3.0)
    with pytest.raises(SettingError, match=message):
        EmotionPredictor(ConfidentModel(), CLASSES, RATE, window_seconds=window, vad="none", **settings)
    assert EmotionPredictor(ConfidentModel(), CLASSES, RATE, 3.0, hop_seconds=3.0, vad="none").hop == 3 * RATE


def test_vad_threshold_is_a_setting():
    speech = speech_like(2.0)
    assert make_predictor(vad_threshold=0.3).predict_array(speech, RATE)["no_speech"] is False
    assert make_predictor(vad_threshold=0.999).predict_array(speech, RATE)["no_speech"] is True
    assert make_predictor(vad_threshold=0.999).describe()["vad_threshold"] == 0.999


def test_the_onnx_path_with_speech_detection_never_imports_torch():
    code = ("import sys, numpy as np; from tests.test_inference_inputs import make_predictor, speech_like; "
            "r = make_predictor().predict_array(speech_like(1.0), 16000); "
            "print(r['emotion'], 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["fearful", "False"], result.stderr[-2000:]


# --- minimum duration ------------------------------------------------------------------------------------
@pytest.mark.parametrize("samples", [1, 2, 3200])
def test_too_short_recordings_get_an_error_naming_the_minimum(predictor, samples):
    with pytest.raises(AudioError, match=r"shorter than the minimum min_seconds=0\.5 s"):
        predictor.predict_array(speech_like(1.0)[:samples], RATE)


def test_a_clip_between_the_minimum_and_a_window_is_padded(predictor):
    result = predictor.predict_array(speech_like(0.6), RATE)
    assert result["duration"] == pytest.approx(0.6) and result["emotion"] == "fearful"
    assert [(w["start"], w["end"]) for w in result["windows"]] == [(0.0, 0.6)]


def test_min_seconds_is_a_setting(tmp_path):
    assert make_predictor(min_seconds=0.2).predict_array(speech_like(0.3), RATE)["duration"] == pytest.approx(0.3)
    with pytest.raises(AudioError, match=r"min_seconds=1 s"):
        make_predictor(min_seconds=1.0).predict_array(speech_like(0.8), RATE)
    with pytest.raises(ValueError, match="min_seconds=-1"):
        make_predictor(min_seconds=-1)
    short = write_clip(tmp_path / "short.wav", "sad", seconds=0.2)
    [entry] = make_predictor().predict_files([short])
    assert entry == {"file": str(short), "error": "0.2 s of audio is shorter than the minimum min_seconds=0.5 s; "
                                                  "record a longer clip (or lower min_seconds)"}


# --- arrays and tensors ----------------------------------------------------------------------------------
def test_channel_layouts_agree_when_unambiguous(predictor):
    mono = speech_like(1.5)
    stereo = np.stack([mono * 0.5, mono * 1.5])  # (2, N): channels first; its mean is `mono`
    reference = predictor.predict_array(mono, RATE)
    for layout in (stereo, stereo.T, mono[None, :], mono[:, None]):
        result = predictor.predict_array(layout, RATE)
        assert result["duration"] == pytest.approx(1.5)
        assert result["probabilities"] == pytest.approx(reference["probabilities"], abs=1e-6)


@pytest.mark.parametrize("shape", [(100, 100), (40, 33), (10, 2), (2, 20)])
def test_ambiguous_shapes_are_refused_naming_the_shape(predictor, shape):
    with pytest.raises(ValueError, match=rf"shape \({shape[0]}, {shape[1]}\): cannot tell channels from samples"):
        predictor.predict_array(np.ones(shape, np.float32), RATE)


def test_torch_tensors_as_torchaudio_returns_them(predictor):
    torch = pytest.importorskip("torch")
    mono = speech_like(1.5)
    reference = predictor.predict_array(mono, RATE)
    for tensor in (torch.from_numpy(mono)[None], torch.from_numpy(mono).double(), torch.from_numpy(mono).bfloat16(),
                   torch.from_numpy(np.stack([mono, mono])), torch.from_numpy((mono * 32767).astype(np.int16))):
        result = predictor.predict_array(tensor, RATE)
        assert result["duration"] == pytest.approx(1.5) and result["emotion"] == reference["emotion"]


@pytest.mark.parametrize("dtype, scale, offset", [(np.int16, 2 ** 15, 0), (np.int32, 2 ** 31, 0),
                                                  (np.uint8, 2 ** 7, 2 ** 7), (np.float16, 1, 0),
                                                  (np.float64, 1, 0)])
def test_integer_samples_are_scaled_to_plus_minus_one(predictor, dtype, scale, offset):
    mono = speech_like(1.5)
    integer = np.clip(np.round(mono * (scale - 1) + offset), np.iinfo(dtype).min, np.iinfo(dtype).max) \
        if np.dtype(dtype).kind in "iu" else mono
    result = predictor.predict_array(integer.astype(dtype), RATE)
    reference = predictor.predict_array(mono, RATE)
    assert result["probabilities"]["fearful"] == pytest.approx(reference["probabilities"]["fearful"], abs=1e-3)


@pytest.mark.parametrize("waveform, rate, message", [
    (np.full(RATE, np.nan), RATE, "NaN or infinite"),
    (np.r_[np.zeros(RATE), np.inf], RATE, "NaN or infinite"),
    (np.full(RATE, 1e300), RATE, "beyond the float32 range"),
    (np.zeros((2, 2, RATE)), RATE, r"shape \(2, 2, 16000\); pass \(samples,\)"),
    (np.float32(0.5), RATE, r"shape \(\)"),
    (np.zeros(0), RATE, "no audio samples"),
    (np.zeros((2, 0)), RATE, "no audio samples"),
    (np.zeros(RATE, bool), RATE, "dtype bool"),
    (np.zeros(RATE, complex), RATE, "dtype complex128"),
    (np.zeros(RATE), None, "sample_rate is required"),
    (np.zeros(RATE), 0, "sample_rate=0"),
    (np.zeros(RATE), -16000, "sample_rate=-16000"),
    (np.zeros(RATE), 44100.5, "sample_rate=44100.5"),
    (np.zeros(RATE), "16000", "sample_rate='16000'"),
    (np.zeros(RATE), 16, "16 Hz is below 1000 Hz"),
])
def test_unusable_inputs_are_refused_with_a_value_error_saying_why(predictor, waveform, rate, message):
    with pytest.raises(ValueError, match=message):
        predictor.predict_array(waveform, rate)


DTYPES = [np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16]


@st.composite
def recordings(draw):
    """(waveform, rate, silent): random dtypes, rates, 1-D or 2-D shapes either way round, silent or noisy."""
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    rate = draw(st.one_of(st.sampled_from([8000, 16000, 22050, 44100, 48000]), st.integers(1000, 96000),
                          st.sampled_from([0, -1, 7, None])))
    samples = draw(st.integers(0, 24000))
    layout = draw(st.sampled_from(["mono", "first", "last"]))
    channels = draw(st.integers(1, 40))
    shape = (samples,) if layout == "mono" else (channels, samples) if layout == "first" else (samples, channels)
    kind = draw(st.sampled_from(["zeros", "constant", "noise"]))
    if kind == "noise":
        values = np.random.default_rng(draw(st.integers(0, 2 ** 16))).uniform(-1, 1, shape)
        data = values * (np.iinfo(dtype).max if dtype.kind in "iu" else 1)
        data = data + (np.iinfo(dtype).max // 2 if dtype.kind == "u" else 0)
    else:
        level = draw(st.floats(-1, 1)) if kind == "constant" else 0.0
        data = np.full(shape, level * (np.iinfo(dtype).max if dtype.kind in "iu" else 1))
    return data.astype(dtype), rate, kind != "noise"


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(recordings())
def test_any_array_gets_an_answer_or_a_clear_value_error(predictor, recording):
    waveform, rate, silent = recording
    try:
        result = predictor.predict_array(waveform, rate)
    except ValueError as error:  # AudioError is one
        assert str(error) and "System error" not in str(error)
        return
    assert result["windows"] and result["duration"] > 0
    if silent:
        assert_no_label(result)
    if result["emotion"] is not None:
        assert sum(result["probabilities"].values()) == pytest.approx(1.0)
        assert any(w["speech"] for w in result["windows"])
    else:
        assert result["no_speech"] is True


# --- one entry per requested path ------------------------------------------------------------------------
def test_every_requested_path_gets_exactly_one_entry(tmp_path, monkeypatch):
    folder_a, folder_b = tmp_path / "a", tmp_path / "b"
    write_speech(folder_a / "one.wav")
    write_speech(folder_b / "nested" / "two.flac")
    (folder_a / "looks_like.wav").mkdir()  # a folder named like audio
    (folder_b / "dangling.wav").symlink_to(tmp_path / "gone.wav")
    locked = write_clip(tmp_path / "locked.wav", "sad", seconds=1.0)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(RATE), RATE)
    (tmp_path / "empty").mkdir()
    real_open = Path.open

    def refuse_locked(self, *args, **kwargs):  # chmod 000 does not stop root, so refuse the read directly
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse_locked)
    requested = [str(folder_a), str(folder_b), str(tmp_path / "missing.wav"), str(locked), str(silent),
                 str(tmp_path / "empty")]
    files = input_files(requested)
    results = make_predictor().predict_files(files)
    by_name = {Path(r["file"]).name: r for r in results}
    assert [Path(r["file"]).name for r in results] == ["looks_like.wav", "one.wav", "dangling.wav", "two.flac",
                                                         "missing.wav", "locked.wav", "silent.wav", "empty"]
    assert by_name["one.wav"]["emotion"] == by_name["two.flac"]["emotion"] == "fearful"
    assert by_name["looks_like.wav"]["error"].startswith("a folder with no audio files (.wav, .flac")
    assert by_name["dangling.wav"]["error"] == f"broken symbolic link (it points to {tmp_path / 'gone.wav'}, " \
                                              "which does not exist)"
    assert by_name["missing.wav"]["error"] == "file not found; check the path"
    assert by_name["locked.wav"]["error"].startswith("permission denied: this user cannot read the file")
    assert by_name["empty"]["error"].startswith("a folder with no audio files")
    assert_no_label(by_name["silent.wav"])
    assert not any("System error" in r.get("error", "") for r in results)


def test_an_unreachable_folder_on_the_path_is_a_permission_error_entry(tmp_path, monkeypatch):
    hidden = tmp_path / "private" / "clip.wav"
    real_stat = Path.stat

    def refuse(self, *args, **kwargs):  # what stat says under a folder without execute permission (root ignores it)
        if self == hidden:
            raise PermissionError(13, "Permission denied", str(self))
        return real_stat(self, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", refuse)
    [entry] = make_predictor().predict_files([hidden])
    assert entry["error"].startswith("permission denied")


def test_a_decoder_failing_in_an_unexpected_way_on_one_file_leaves_the_others_answered(tmp_path, monkeypatch):
    from emotion_lightning.inference import predictor as predicting

    good, broken = write_speech(tmp_path / "good.wav"), write_speech(tmp_path / "broken.flac")
    real_load = predicting.load

    def decoder_crash(path, sample_rate, *limits):  # e.g. imageio-ffmpeg without its binary raises RuntimeError
        if Path(path) == broken:
            raise RuntimeError("no ffmpeg exe could be found")
        return real_load(path, sample_rate, *limits)

    monkeypatch.setattr(predicting, "load", decoder_crash)
    results = make_predictor().predict_files([broken, good])
    assert results[0] == {"file": str(broken),
                          "error": "cannot read the file (RuntimeError: no ffmpeg exe could be found)"}
    assert results[1]["emotion"] == "fearful"


def test_a_folder_named_like_audio_with_audio_inside_is_expanded(tmp_path):
    write_speech(tmp_path / "take.wav" / "inner.wav")
    results = make_predictor().predict_files(input_files(str(tmp_path / "take.wav")))
    assert [(Path(r["file"]).name, r.get("emotion")) for r in results] == [("inner.wav", "fearful")]
    assert make_predictor().predict_files([tmp_path / "take.wav"])[0]["error"].startswith("is a folder, not an audio")


def test_an_empty_request_is_refused():
    with pytest.raises(ValueError, match="names no file"):
        input_files([])


def test_exit_status_counts_answered_files():
    assert exit_status({"files": 3, "failed": 0}) == 0
    assert exit_status({"files": 3, "failed": 1}) == 1
    assert exit_status({"files": 3, "failed": 3}) == 2


def test_a_bad_checkpoint_exits_2_naming_it(tmp_path):
    result = subprocess.run([sys.executable, "-m", "emotion_lightning.predict", f"ckpt={tmp_path}/none.ckpt",
                             f"audio={tmp_path}", f"output={tmp_path}/p.json"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 2, result.stderr[-2000:]
    assert "none.ckpt does not exist" in result.stdout + result.stderr and "Traceback" not in result.stderr


# --- the service -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client(predictor):
    from fastapi.testclient import TestClient

    from emotion_lightning.inference.app import create_app

    return TestClient(create_app(predictor, max_upload_mb=1, max_seconds=10), base_url="http://127.0.0.1")


def wav(waveform: np.ndarray, rate: int = RATE) -> bytes:
    import io

    buffer = io.BytesIO()
    sf.write(buffer, waveform, rate, format="WAV")
    return buffer.getvalue()


def test_service_answers_silence_with_no_label(client):
    response = client.post("/predict", files={"file": ("quiet.wav", wav(np.zeros(2 * RATE)))})
    assert response.status_code == 200
    assert_no_label(response.json())
    assert client.get("/health").json()["vad"] == "silero"


def test_service_refuses_a_too_short_upload_naming_the_minimum(client):
    response = client.post("/predict", files={"file": ("click.wav", wav(speech_like(0.1)))})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("click.wav: 0.1 s of audio is shorter than the minimum min_seconds=0.5")


def test_service_form_errors_are_json_objects(client):
    response = client.post("/predict", data={"audio": "clip.wav"})
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert isinstance(errors, list) and errors[0]["loc"] == ["body", "file"] and errors[0]["type"] == "missing"
    json.dumps(errors)
