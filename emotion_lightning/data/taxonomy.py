"""The unified 8-class emotion taxonomy shared by every corpus."""

from emotion_lightning.data.errors import SettingError

EMOTIONS: tuple[str, ...] = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")


def check_emotion_map(corpus: str, emotion_map: dict) -> dict[str, str]:
    """Validate a corpus's code -> unified-emotion mapping (codes are kept as strings)."""
    unknown = sorted({str(v) for v in emotion_map.values()} - set(EMOTIONS))
    if unknown:
        raise SettingError(
            f"{corpus}: emotion_map maps to {unknown}, which are not in the unified taxonomy {list(EMOTIONS)}; "
            f"fix the corpus config (conf/corpus/{corpus}.yaml)."
        )
    return {str(code): str(emotion) for code, emotion in emotion_map.items()}
