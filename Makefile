PYTHON ?= python
# Benchmarks read the real corpora here (this project's machines keep them in ../shared/data).
BENCH_DATA_DIR ?= $(or $(EMOTION_DATA_DIR),../shared/data)
BENCH_MODELS_DIR ?= $(or $(EMOTION_MODELS_DIR),../shared/models)

.PHONY: install data train test test-fast bench bench-inference bench-stream clean

# `make data` downloads this corpus (ravdess, crema_d, tess or all) into the data dir.
CORPUS ?= ravdess

install:  ## the package, its dependencies (torch/torchaudio 2.11.0, Lightning, Hydra, ...) and the `emotion-lightning` command
	$(PYTHON) -m pip install -e ".[test]"

data:  ## download CORPUS (RAVDESS by default) into EMOTION_DATA_DIR, else data/; checks and skips what is already there
	$(PYTHON) -m emotion_lightning.download corpus=$(CORPUS)

train:  ## train and test the default model (ResNet, RAVDESS, speaker-independent) on EMOTION_DATA_DIR
	$(PYTHON) -m emotion_lightning.train

test:  ## the whole suite (the real-RAVDESS test is skipped when ../shared/data/ravdess is absent)
	$(PYTHON) -m pytest -q --durations=10

test-fast:  ## the suite without the slow tier (no subprocess training, no real corpus)
	$(PYTHON) -m pytest -q -m "not slow"

# e.g. make bench THROUGHPUT_ARGS=--quick (a smoke run), THROUGHPUT_ARGS="--device cuda" (the ratios on a GPU)
THROUGHPUT_ARGS ?=

bench:  ## throughput ratios side by side (augmentation, frozen Whisper, pipeline vs network, Whisper base top-2 vs full fine-tuning), pipeline speed, a full 30-epoch ResNet run
	$(PYTHON) benchmarks/throughput.py --data-dir $(BENCH_DATA_DIR) --models-dir $(BENCH_MODELS_DIR) $(THROUGHPUT_ARGS)
	$(PYTHON) benchmarks/pipeline_speed.py --data-dir $(BENCH_DATA_DIR)
	$(PYTHON) benchmarks/whisper_window.py --checkpoint $(BENCH_MODELS_DIR)/whisper-tiny.en
	$(PYTHON) benchmarks/full_run.py --data-dir $(BENCH_DATA_DIR)

bench-inference:  ## per-model latency, throughput and memory, PyTorch vs ONNX Runtime (CHECKPOINTS="resnet=PATH ..."); live streams: make bench-stream
	$(PYTHON) benchmarks/inference.py $(foreach c,$(CHECKPOINTS),--checkpoint $(c)) $(BENCH_INFERENCE_ARGS)

bench-stream:  ## live streams: latency from a window's last sample to its event, real-time streams one core keeps up with
	$(PYTHON) benchmarks/stream_latency.py --data-dir $(BENCH_DATA_DIR) $(BENCH_STREAM_ARGS)

clean:  ## caches and outputs (decoded waveforms are rebuilt on the next run)
	rm -rf cache outputs .pytest_cache
