"""Feature front-ends: modules of the model, so they run on the model's device and export with it."""

import torch
from torch import nn
from torchaudio.transforms import FrequencyMasking, MelSpectrogram, TimeMasking


class LogMelFrontend(nn.Module):
    """Waveform (batch, samples) -> standardised log-mel (batch, 1, n_mels, frames).

    Each utterance is standardised on its own (zero mean, unit variance over the whole spectrogram), so
    the network sees level-independent features. 3 s at 16 kHz with the earlier project's settings gives 64 x 94.
    """

    def __init__(self, sample_rate: int = 16000, n_fft: int = 1024, hop_length: int = 512, n_mels: int = 64,
                 f_min: float = 0.0, f_max: float | None = None):
        super().__init__()
        self.mel = MelSpectrogram(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels,
                                  f_min=f_min, f_max=f_max, power=2.0)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        # The STFT and log stay in float32 under mixed precision: half precision loses quiet bins.
        with torch.autocast(device_type=waveform.device.type, enabled=False):
            log_mel = torch.log(self.mel(waveform.float()) + 1e-6)
            mean = log_mel.mean(dim=(-2, -1), keepdim=True)
            std = log_mel.std(dim=(-2, -1), keepdim=True)
            return ((log_mel - mean) / (std + 1e-5)).unsqueeze(1)


class SpecAugment(nn.Module):
    """SpecAugment's masking (Park et al., 2019) on a (batch, 1, mels, frames) log-mel batch, in training only:
    `freq_masks` bands of up to `freq_width` mels and `time_masks` spans of up to `time_width` frames, drawn
    independently per clip, set to 0 (the mean of a standardised log-mel)."""

    def __init__(self, freq_masks: int = 2, freq_width: int = 8, time_masks: int = 2, time_width: int = 10):
        super().__init__()
        self.masks = nn.Sequential(*[FrequencyMasking(freq_width, iid_masks=True) for _ in range(freq_masks)],
                                   *[TimeMasking(time_width, iid_masks=True) for _ in range(time_masks)])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() != 4:
            raise ValueError(f"SpecAugment expects (batch, 1, mels, frames) log-mels, got shape {tuple(features.shape)}")
        return self.masks(features) if self.training else features
