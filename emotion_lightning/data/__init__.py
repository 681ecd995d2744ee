"""Corpora, manifest, waveform cache, splits and the LightningDataModule."""
