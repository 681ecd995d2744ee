"""Export a trained checkpoint as one graph, waveform -> class probabilities (front-end included).

The log-mel front-end is part of the graph, so a deployment feeds raw 16 kHz windows and needs neither
torchaudio nor this package. The batch axis is dynamic; the sample axis is the model's window (the
training clip), which the LSTM and Transformer need fixed to export.
"""

import json
import logging
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch import nn

from emotion_lightning.data.atomic import atomic_path
from emotion_lightning.data.errors import SettingError
from emotion_lightning.models.module import EmotionClassifier
from emotion_lightning.inference.metadata import FORMATS, METADATA_KEY, default_output, metadata, window_samples

log = logging.getLogger(__name__)
PARITY_TOLERANCE = 1e-3  # class probabilities; a faithful float32 graph differs by about 1e-6


class ProbabilityGraph(nn.Module):
    """Front-end + network + softmax: (batch, samples) float32 waveform -> (batch, classes) probabilities."""

    def __init__(self, model: EmotionClassifier):
        super().__init__()
        self.frontend, self.network = model.frontend, model.network

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.network(self.frontend(waveform)).softmax(dim=-1)


def export_onnx(model: EmotionClassifier, output: str | Path, opset: int = 18) -> Path:
    """Write the model as ONNX (dynamic batch axis, input `waveform`, output `probabilities`) with metadata."""
    import onnx

    info = metadata(model)
    graph = ProbabilityGraph(model).eval()
    example = torch.zeros(2, window_samples(info))
    output = Path(output)
    with atomic_path(output) as temporary:
        torch.onnx.export(graph, (example,), str(temporary), input_names=["waveform"],
                          output_names=["probabilities"], dynamic_shapes=({0: torch.export.Dim("batch")},),
                          opset_version=opset, dynamo=True, external_data=False, verbose=False)
        proto = onnx.load(str(temporary))
        onnx.helper.set_model_props(proto, {METADATA_KEY: json.dumps(info)})
        onnx.save(proto, str(temporary))
    return output


def export_torchscript(model: EmotionClassifier, output: str | Path) -> Path:
    """Write the model as a traced TorchScript module; the metadata travels as an extra file."""
    info = metadata(model)
    graph = ProbabilityGraph(model).eval()
    # An ensemble holds LightningModules, whose `trainer` property raises outside a Trainer unless Lightning
    # is told a JIT pass is running (the flag its own `to_torchscript` sets).
    members = [m for m in graph.modules() if isinstance(m, L.LightningModule)]
    for member in members:
        member._jit_is_scripting = True
    try:
        with torch.no_grad():
            traced = torch.jit.trace(graph, torch.zeros(2, window_samples(info)), check_trace=False)  # parity() checks
    finally:
        for member in members:
            member._jit_is_scripting = False
    output = Path(output)
    with atomic_path(output) as temporary:
        torch.jit.save(traced, str(temporary), _extra_files={METADATA_KEY: json.dumps(info)})
    return output


def parity(model: EmotionClassifier, exported: str | Path, waveforms: np.ndarray, fmt: str | None = None) -> float:
    """Largest absolute difference of class probabilities between PyTorch and the exported file (its format
    from its suffix unless `fmt` says: a temporary file has none)."""
    graph = ProbabilityGraph(model).eval()
    with torch.no_grad():
        expected = graph(torch.from_numpy(waveforms)).numpy()
    exported = Path(exported)
    if (fmt or ("onnx" if exported.suffix == ".onnx" else "torchscript")) == "onnx":
        import onnxruntime

        runtime = onnxruntime.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
        actual = runtime.run(None, {"waveform": waveforms})[0]
    else:
        with torch.no_grad():
            actual = torch.jit.load(str(exported))(torch.from_numpy(waveforms)).numpy()
    return float(np.abs(actual - expected).max())


def write_checked(model: EmotionClassifier, output: str | Path, fmt: str = "onnx", opset: int = 18) -> Path:
    """Write the export under a temporary name, compare it with PyTorch on random audio, and rename it to
    `output` only if every probability agrees within PARITY_TOLERANCE: a graph that answers differently never
    replaces a good file."""
    writers = {"onnx": lambda path: export_onnx(model, path, opset),
               "torchscript": lambda path: export_torchscript(model, path)}
    if fmt not in writers:
        raise SettingError(f"format={fmt!r}; use one of {sorted(FORMATS)}")
    noise = (0.1 * np.random.default_rng(0).standard_normal((3, window_samples(metadata(model))))).astype(np.float32)
    output = Path(output)
    with atomic_path(output) as candidate:
        writers[fmt](candidate)
        difference = parity(model, candidate, noise, fmt)
        if not difference <= PARITY_TOLERANCE:  # NaN fails too
            raise SettingError(
                f"the {fmt} export of this model gives probabilities up to {difference:.3g} away from PyTorch's on "
                f"random audio (tolerance {PARITY_TOLERANCE:g}), so {output} was not written; try the other format "
                f"(format=onnx / format=torchscript) or, for ONNX, another opset (opset=17)")
    log.info("wrote %s; largest probability difference from PyTorch on random audio: %.2e", output, difference)
    return output


def export(ckpt: str | Path, fmt: str = "onnx", output: str | Path | None = None, opset: int = 18) -> Path:
    """Export a checkpoint to `output` (default: beside it), checked against PyTorch before it lands."""
    return write_checked(EmotionClassifier.from_checkpoint(ckpt), output or default_output(ckpt, fmt), fmt, opset)
