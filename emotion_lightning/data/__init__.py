"""Audio I/O, corpora, manifest, waveform cache, splits, the LightningDataModule, taxonomy, waveform transforms
and atomic file writes: the bottom layer, importing nothing else of the package."""
