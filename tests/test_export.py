"""Export: the ONNX and TorchScript graphs (log-mel front-end + network) match PyTorch on fixture audio."""

import json

import numpy as np
import onnx
import pytest
import torch

from emotion_lightning.data.audio import load
from emotion_lightning.data.errors import SettingError
from emotion_lightning.inference.export import ProbabilityGraph, export, parity, write_checked
from emotion_lightning.models.module import EmotionClassifier
from emotion_lightning.inference.predictor import EmotionPredictor
from emotion_lightning.inference.windows import cut, window_starts
from emotion_lightning.training.build import build_model
from tests.helpers.audio import write_clip
from tests.helpers.configs import TINY_WHISPER_OVERRIDE

WINDOW = 48000  # 3 s at 16 kHz, the fixture model's training clip


@pytest.fixture(scope="module")
def model(trained_checkpoint) -> EmotionClassifier:
    return EmotionClassifier.from_checkpoint(trained_checkpoint)


@pytest.fixture(scope="module")
def fixture_windows(data_dir, tmp_path_factory) -> np.ndarray:
    """Model windows of real fixture recordings: short padded clips of three corpora and a long one."""
    files = sorted((data_dir / "ravdess" / "Actor_01").glob("*.wav"))[:3] + sorted(
        (data_dir / "crema_d" / "AudioWAV").glob("*.wav"))[:2] + sorted((data_dir / "tess").rglob("*.wav"))[:2]
    files.append(write_clip(tmp_path_factory.mktemp("long") / "long.flac", "happy", seconds=6.5, sample_rate=24414))
    windows = []
    for path in files:
        waveform = load(path, 16000)
        windows.extend(cut(waveform, window_starts(len(waveform), WINDOW, WINDOW // 2), WINDOW))
    return np.stack(windows).astype(np.float32)


def test_onnx_matches_pytorch_within_1e_4_on_fixture_audio(model, onnx_export, fixture_windows):
    assert len(fixture_windows) == 7 + 4  # seven short clips, and 6.5 s = windows at 0, 1.5, 3, 3.5 s
    difference = parity(model, onnx_export, fixture_windows)
    assert difference < 1e-4, difference


@pytest.mark.parametrize("name", ["whisper", "whisper_partial", "whisper_finetune"])
def test_a_whisper_classifier_exports_to_onnx_and_matches_pytorch(name, compose_train, fixture_windows, tmp_path):
    """The pretrained recipes ship too: Whisper's log-mel, its encoder (frozen, partly or wholly fine-tuned: at
    inference all three run the whole encoder on audio), the layer mix and the head in one graph."""
    cfg = compose_train([f"model={name}", "model.network.checkpoint=null", f"model.network.config={TINY_WHISPER_OVERRIDE}",
                         *(["model.network.frozen_layers=1"] if name == "whisper_partial" else [])])
    torch.manual_seed(0)
    model = build_model(cfg).eval()  # as training builds it, with the run config the export's metadata reads
    with torch.no_grad():  # weights as far from their initialisation as trained ones, so clips get distinct answers
        for parameter in model.network.parameters():
            parameter.add_(0.2 * torch.randn_like(parameter))
    exported = write_checked(model, tmp_path / f"{name}.onnx")
    assert parity(model, exported, fixture_windows) < 1e-4
    probabilities = EmotionPredictor.from_onnx(exported).backend(fixture_windows[:3])
    assert probabilities.shape == (3, 8) and probabilities.sum(axis=1) == pytest.approx(np.ones(3), abs=1e-5)
    assert np.ptp(probabilities, axis=0).max() > 1e-3  # the clips are told apart: the parity is not of a constant


def test_onnx_graph_holds_the_frontend_and_a_dynamic_batch_axis(onnx_export, fixture_windows):
    proto = onnx.load(str(onnx_export))
    operators = {node.op_type for node in proto.graph.node}
    assert {"STFT", "Conv", "Softmax"} <= operators  # log-mel front-end, network and softmax in one graph
    batch_axis = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_axis.dim_param and not batch_axis.dim_value
    metadata = json.loads({p.key: p.value for p in proto.metadata_props}["emotion_lightning"])
    assert metadata == {"classes": ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"],
                        "sample_rate": 16000, "clip_seconds": 3.0, "model": "resnet", "temperature": 1.0}
    onnx_predictor = EmotionPredictor.from_onnx(onnx_export)
    for batch in (1, 5):
        probabilities = onnx_predictor.backend(fixture_windows[:batch])
        assert probabilities.shape == (batch, 8)
        assert probabilities.sum(axis=1) == pytest.approx(np.ones(batch), abs=1e-5)


def test_torchscript_export_beside_the_checkpoint_matches_pytorch(model, trained_checkpoint, fixture_windows):
    exported = export(trained_checkpoint, "torchscript")
    assert exported == trained_checkpoint.with_name("last.torchscript.pt") and exported.is_file()
    assert parity(model, exported, fixture_windows) < 1e-4


def test_an_export_that_disagrees_with_pytorch_is_refused_and_the_old_file_kept(trained_checkpoint, tmp_path,
                                                                              monkeypatch):
    import torch

    from emotion_lightning.inference import export as exporting

    model = EmotionClassifier.from_checkpoint(trained_checkpoint)
    output = tmp_path / "model.torchscript.pt"
    output.write_bytes(b"the previous export")
    write = exporting.export_torchscript

    def drifting_write(model, path):  # the file holds these weights; PyTorch then answers with others
        written = write(model, path)
        with torch.no_grad():
            last = list(model.parameters())[-1]
            last.add_(torch.linspace(-3, 3, last.numel()).view_as(last))
        return written

    monkeypatch.setattr(exporting, "export_torchscript", drifting_write)
    with pytest.raises(SettingError, match=f"away from PyTorch's .* so {output} was not written"):
        exporting.write_checked(model, output, "torchscript")
    assert output.read_bytes() == b"the previous export"
    assert [p.name for p in tmp_path.iterdir()] == [output.name]  # no temporary file left either


def test_backend_onnx_beside_a_read_only_checkpoint_says_where_to_export(trained_checkpoint, tmp_path, monkeypatch):
    from emotion_lightning.inference import export as exporting

    checkpoint = tmp_path / "shared" / "best.ckpt"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(trained_checkpoint.read_bytes())

    def read_only(*args, **kwargs):  # what a folder the user cannot write to raises (tests may run as root)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(exporting, "write_checked", read_only)
    with pytest.raises(SettingError, match=f"{checkpoint.parent} is not writable: export it elsewhere "
                                           r"\(emotion-lightning export ckpt=.* output=DIR/model.onnx\)"):
        EmotionPredictor.from_checkpoint(checkpoint, backend="onnx", vad="none")


def test_an_ensemble_exports_to_torchscript(trained_checkpoint, fixture_windows, tmp_path):
    from emotion_lightning.inference.export import export_torchscript
    from emotion_lightning.models.ensemble import build_ensemble

    ensemble = build_ensemble([str(trained_checkpoint)] * 2)
    ensemble.run_config = {"audio": {"sample_rate": 16000, "clip_seconds": 3.0}, "model": {"name": "ensemble"}}
    exported = export_torchscript(ensemble, tmp_path / "ensemble.torchscript.pt")
    assert parity(ensemble, exported, fixture_windows[:4]) < 1e-4


def test_onnx_backend_of_the_predictor_agrees_with_pytorch(trained_checkpoint, onnx_export, data_dir):
    files = sorted((data_dir / "ravdess" / "Actor_02").glob("*.wav"))[:4]
    # vad=none: fixture clips are tones, not speech; speech detection parity is in tests/test_predict.py
    torch_results = EmotionPredictor.from_checkpoint(trained_checkpoint, vad="none").predict_files(files)
    onnx_results = EmotionPredictor.from_checkpoint(trained_checkpoint, backend="onnx", vad="none").predict_files(files)
    for expected, actual in zip(torch_results, onnx_results):
        assert actual["emotion"] == expected["emotion"]
        assert actual["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-4)


def test_graph_outputs_probabilities(model, fixture_windows):
    import torch

    with torch.no_grad():
        probabilities = ProbabilityGraph(model)(torch.from_numpy(fixture_windows[:2]))
    assert probabilities.shape == (2, 8) and torch.allclose(probabilities.sum(dim=1), torch.ones(2))


def test_onnx_file_without_metadata_is_refused_with_the_fix(onnx_export, tmp_path):
    proto = onnx.load(str(onnx_export))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "foreign.onnx"))
    with pytest.raises(ValueError, match="not written by emotion_lightning.export.*format=onnx"):
        EmotionPredictor.from_onnx(tmp_path / "foreign.onnx")


def test_onnx_window_is_fixed_at_export(onnx_export):
    with pytest.raises(ValueError, match="takes 3.0 s windows"):
        EmotionPredictor.from_onnx(onnx_export, window_seconds=2.0)


def test_unknown_format_is_named(trained_checkpoint):
    with pytest.raises(ValueError, match="format='tflite'"):
        export(trained_checkpoint, "tflite")
