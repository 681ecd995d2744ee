"""Small configs and tables the tests share: corpus emotion maps, tiny pretrained-encoder configs, a toy manifest."""

from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
CORPUS_CONF = CONF_DIR / "corpus"


def emotion_map(name: str) -> dict:
    """A corpus's code -> taxonomy emotion mapping, as its conf/corpus/NAME.yaml gives it."""
    return OmegaConf.to_container(OmegaConf.load(CORPUS_CONF / f"{name}.yaml"))["emotion_map"]


# Tiny random configurations of each pretrained-encoder family (no weights to download).
WAV2VEC2_LIKE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     conv_dim=[16, 16], conv_stride=[5, 4], conv_kernel=[10, 4], num_conv_pos_embeddings=16,
                     num_conv_pos_embedding_groups=2)
TINY = {
    "wav2vec2": {"model_type": "wav2vec2", **WAV2VEC2_LIKE},
    "hubert": {"model_type": "hubert", **WAV2VEC2_LIKE},
    "wavlm": {"model_type": "wavlm", **WAV2VEC2_LIKE, "num_buckets": 16, "max_bucket_distance": 20},
    "whisper": {"model_type": "whisper", "d_model": 32, "encoder_layers": 2, "encoder_attention_heads": 2,
                "decoder_layers": 1, "decoder_attention_heads": 2, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64,
                "num_mel_bins": 80, "vocab_size": 64, "pad_token_id": 1, "bos_token_id": 2, "eos_token_id": 2,
                "decoder_start_token_id": 3},
}


# TINY["whisper"] as a command-line value: `model.network.config=...` with `model.network.checkpoint=null`
TINY_WHISPER_OVERRIDE = "{" + ", ".join(f"{key}: {value}" for key, value in TINY["whisper"].items()) + "}"


def toy_manifest(speakers_per_corpus=None, clips_per_speaker_emotion=5) -> pd.DataFrame:
    """Manifest rows for split tests: four emotions per speaker, genders alternating."""
    speakers_per_corpus = speakers_per_corpus or {"ravdess": 24}
    rows = []
    for corpus, n in speakers_per_corpus.items():
        for s in range(1, n + 1):
            for emotion in ["neutral", "happy", "sad", "angry"]:
                for k in range(clips_per_speaker_emotion):
                    rows.append({"path": f"{corpus}/{s}/{emotion}/{k}.wav", "corpus": corpus,
                                 "speaker": f"{corpus}:{s:02d}", "gender": "male" if s % 2 else "female",
                                 "emotion": emotion})
    return pd.DataFrame(rows)
