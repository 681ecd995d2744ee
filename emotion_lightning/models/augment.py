"""Waveform augmentation on whole batches, on the model's device, vectorised in torch.

`augment.waveform` is written as a robustness Chain (conf/augment/_waveform.yaml); `split_chain` turns it into
a BatchAugment (noise at an SNR, gain with clipping, band-limiting) that runs inside `training_step`, and the
Codec that the DataModule serves from its cache of codec variants (MP3/Opus cannot run on a GPU or in a batch).
Draws come from torch's generator of the batch's device, so they follow `seed` and resume from a checkpoint.
Test conditions do not come here: they keep their per-clip, seeded numpy transforms (data/transforms.py).
"""

from dataclasses import dataclass

import torch
from torch import nn

from emotion_lightning.data.transforms import AddNoise, Chain, Codec, Gain, Resample

Range = float | list[float] | tuple[float, float]


def draw(value: Range, count: int, device) -> torch.Tensor:
    """`count` values: the fixed one, or uniform draws from a [low, high] range (float64, as the numpy path)."""
    if isinstance(value, (int, float)):
        return torch.full((count,), float(value), dtype=torch.float64, device=device)
    low, high = (float(v) for v in value)
    return low + (high - low) * torch.rand(count, dtype=torch.float64, device=device)


def options(value) -> list:
    return [value] if isinstance(value, (str, int, float)) else list(value)


def power(batch: torch.Tensor) -> torch.Tensor:
    return batch.double().square().mean(dim=1)


@dataclass
class Step:
    """One augmentation: `kind` noise | gain | band_limit, its settings and its probability per clip."""
    kind: str
    settings: dict
    p: float


class BatchAugment(nn.Module):
    """Waveform batch (batch, samples) -> augmented batch, in training only; each step is applied to each clip
    with its probability, parameters drawn per clip."""

    def __init__(self, steps: list[Step], sample_rate: int = 16000):
        super().__init__()
        self.steps, self.sample_rate = list(steps), sample_rate

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return waveform
        if waveform.dim() != 2:
            raise ValueError(f"augment.waveform acts on waveform batches (batch, samples), got shape "
                             f"{tuple(waveform.shape)}: a model fed cached encoder features cannot use it "
                             "(set feature_cache.enabled=false, or augment=none / augment=mixup)")
        for step in self.steps:
            chosen = torch.rand(len(waveform), device=waveform.device) < step.p
            waveform = getattr(self, step.kind)(waveform, chosen, **step.settings)
        return waveform

    def noise(self, batch, chosen, kind, snr_db, talkers):
        kinds = options(kind)
        which = torch.randint(len(kinds), (len(batch),), device=batch.device)
        snr = draw(snr_db, len(batch), batch.device)
        noise = torch.zeros_like(batch)
        for number, name in enumerate(kinds):
            rows = torch.nonzero(chosen & (which == number)).squeeze(1)
            if len(rows):
                noise[rows] = self.make_noise(name, batch, rows, talkers)
        signal_power = power(batch).clamp_min(1e-10)  # silence gets noise as if the clip were at -100 dB
        scale = torch.sqrt(signal_power / (power(noise).clamp_min(1e-30) * 10 ** (snr / 10)))
        return torch.where(chosen[:, None], batch + (scale[:, None] * noise).to(batch.dtype), batch)

    @staticmethod
    def make_noise(kind: str, batch: torch.Tensor, rows: torch.Tensor, talkers: int) -> torch.Tensor:
        if kind == "babble" and len(batch) > 1:
            # `talkers` other clips of the batch, each at unit power (the shifts never pick the clip itself)
            shifts = torch.randperm(len(batch) - 1, device=batch.device)[:talkers] + 1
            level = power(batch)
            voices = batch * torch.where(level > 0, level.clamp_min(1e-30).rsqrt(), 0).to(batch.dtype)[:, None]
            return sum(voices[(rows + shift) % len(batch)] for shift in shifts)
        noise = torch.randn(len(rows), batch.shape[1], device=batch.device)  # white (babble of a one-clip batch too)
        if kind != "pink":
            return noise
        spectrum = torch.fft.rfft(noise.double())  # 1/f power: amplitude 1/sqrt(f), DC removed
        frequencies = torch.arange(spectrum.shape[1], dtype=torch.float64, device=batch.device).clamp_min(1)
        spectrum = spectrum / frequencies.sqrt()
        spectrum[:, 0] = 0
        return torch.fft.irfft(spectrum, n=batch.shape[1]).float()

    @staticmethod
    def gain(batch, chosen, db, clip):
        louder = batch * (10 ** (draw(db, len(batch), batch.device) / 20)).to(batch.dtype)[:, None]
        if clip:
            louder = louder.clamp(-1.0, 1.0)
        return torch.where(chosen[:, None], louder, batch)

    def band_limit(self, batch, chosen, sample_rate):
        """The band of a lower sampling rate: everything above its Nyquist frequency removed (an ideal low-pass
        in the frequency domain; the test condition's soxr round trip has a short transition band instead)."""
        rates = torch.tensor([float(r) for r in options(sample_rate)], device=batch.device)
        cutoff = rates[torch.randint(len(rates), (len(batch),), device=batch.device)] / 2
        rows = torch.nonzero(chosen & (cutoff < self.sample_rate / 2)).squeeze(1)
        if not len(rows):
            return batch
        spectrum = torch.fft.rfft(batch[rows].double())
        frequencies = torch.fft.rfftfreq(batch.shape[1], 1 / self.sample_rate, device=batch.device)
        spectrum = spectrum * (frequencies[None, :] <= cutoff[rows, None])
        batch = batch.clone()
        batch[rows] = torch.fft.irfft(spectrum, n=batch.shape[1]).to(batch.dtype)
        return batch

    def extra_repr(self) -> str:
        return ", ".join(f"{step.kind}(p={step.p}, {step.settings})" for step in self.steps)


def split_chain(chain: Chain | None, sample_rate: int) -> tuple[BatchAugment | None, Codec | None]:
    """`augment.waveform` -> (the batch augmentation for the model, the codec for the DataModule's variants).

    The codec's variants are made from the clean clip, so in training it comes before the noise, gain and band
    (in the chain's order otherwise)."""
    if not chain:
        return None, None
    steps, codecs = [], []
    for transform in chain.transforms:
        if isinstance(transform, AddNoise):
            steps.append(Step("noise", {"kind": transform.kind, "snr_db": transform.snr_db,
                                        "talkers": transform.talkers}, transform.p))
        elif isinstance(transform, Gain):
            steps.append(Step("gain", {"db": transform.db, "clip": transform.clip}, transform.p))
        elif isinstance(transform, Resample):
            steps.append(Step("band_limit", {"sample_rate": transform.sample_rate}, transform.p))
        elif isinstance(transform, Codec):
            codecs.append(transform)
        else:
            raise ValueError(f"augment.waveform: {type(transform).__name__} has no batched form; use AddNoise, Gain, "
                             "Resample and at most one Codec")
    if len(codecs) > 1:
        raise ValueError("augment.waveform: give at most one Codec (list several bitrates in it instead)")
    return (BatchAugment(steps, sample_rate) if steps else None), (codecs[0] if codecs else None)
