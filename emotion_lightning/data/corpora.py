"""Parsers that read labels, speaker and recording facts from each corpus's real file layout and names.

A parser never opens audio: it only maps a path to labels. Codes are mapped to the unified taxonomy by
the `emotion_map` of the corpus config, so a user can drop an emotion by removing it from the map.
"""

import csv
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from emotion_lightning.data.audio import find_audio_files
from emotion_lightning.data.errors import SettingError
from emotion_lightning.data.taxonomy import check_emotion_map

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipLabels:
    """What a file name tells about one clip. `emotion` is the corpus's own code."""

    speaker: str
    gender: str
    emotion: str
    intensity: str
    text: str


class Corpus:
    """A corpus on disk: where it is, how its names are parsed, how its emotions map to the taxonomy."""

    name = "corpus"
    emotion_codes: frozenset[str] = frozenset()  # the codes `parse` returns; the emotion map's keys must be among them

    def __init__(self, root: str | Path, emotion_map: dict):
        # Resolved, so manifest rows (and the waveform cache keyed on them) are the same whichever way the data
        # dir is spelled (`../shared/data`, its absolute path, a symlink).
        self.root = Path(root).resolve()
        self.emotion_map = check_emotion_map(self.name, emotion_map)
        unknown = sorted(set(self.emotion_map) - self.emotion_codes)
        if self.emotion_codes and unknown:  # such a key matches no clip: its class would silently shrink or vanish
            raise SettingError(f"{self.name}: emotion_map has codes {unknown} that no {self.name} file carries; use "
                               f"its codes {sorted(self.emotion_codes)} (quote codes that look like numbers in YAML) in "
                               f"conf/corpus/{self.name}.yaml")

    def audio_files(self) -> list[Path]:
        """Every file with an audio extension under the root, in a stable order."""
        if not self.root.is_dir():
            return []
        return find_audio_files(self.root)

    def label_files(self) -> list[Path]:
        """Files besides the audio that labels are read from: a cached manifest is rebuilt when one changes."""
        return []

    def parse(self, path: Path) -> ClipLabels:
        """Labels from a path; raise ValueError saying what is wrong with the name."""
        raise NotImplementedError


RAVDESS_EMOTIONS = {"01", "02", "03", "04", "05", "06", "07", "08"}
RAVDESS_INTENSITY = {"01": "normal", "02": "strong"}
RAVDESS_STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
RAVDESS_CHANNELS = {"speech": "01", "song": "02"}


class Ravdess(Corpus):
    """RAVDESS: `Actor_XX/MM-VV-EE-II-SS-RR-AA.wav` (modality, vocal channel, emotion, intensity,
    statement, repetition, actor); odd actors are male."""

    name = "ravdess"
    emotion_codes = frozenset(RAVDESS_EMOTIONS)
    def __init__(self, root: str | Path, emotion_map: dict, vocal_channel: str = "speech"):
        super().__init__(root, emotion_map)
        if vocal_channel not in RAVDESS_CHANNELS:
            raise SettingError(f"ravdess: vocal_channel={vocal_channel!r}; use one of {sorted(RAVDESS_CHANNELS)}")
        self.channel_code = RAVDESS_CHANNELS[vocal_channel]

    def parse(self, path: Path) -> ClipLabels:
        parts = path.stem.split("-")
        if len(parts) != 7 or not all(len(p) == 2 and p.isdigit() for p in parts):
            raise ValueError("name is not MM-VV-EE-II-SS-RR-AA (seven two-digit codes)")
        _modality, channel, emotion, intensity, statement, _repetition, actor = parts
        if channel != self.channel_code:
            raise ValueError(f"vocal channel {channel} is not the configured {self.channel_code}")
        if emotion not in RAVDESS_EMOTIONS:
            raise ValueError(f"unknown emotion code {emotion}")
        if intensity not in RAVDESS_INTENSITY:
            raise ValueError(f"unknown intensity code {intensity}")
        if statement not in RAVDESS_STATEMENTS:
            raise ValueError(f"unknown statement code {statement}")
        actor_number = int(actor)
        if not 1 <= actor_number <= 24:
            raise ValueError(f"actor {actor} is outside 01-24")
        return ClipLabels(
            speaker=f"ravdess:{actor}",
            gender="male" if actor_number % 2 else "female",
            emotion=emotion,
            intensity=RAVDESS_INTENSITY[intensity],
            text=RAVDESS_STATEMENTS[statement],
        )


CREMA_D_SENTENCES = {
    "IEO": "It's eleven o'clock",
    "TIE": "That is exactly what happened",
    "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about",
    "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before",
    "TSI": "The surface is slick",
    "WSI": "We'll stop in a couple of minutes",
}
CREMA_D_EMOTIONS = {"ANG", "DIS", "FEA", "HAP", "NEU", "SAD"}
CREMA_D_LEVELS = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}


class CremaD(Corpus):
    """CREMA-D: `AudioWAV/AAAA_SSS_EEE_LL.wav`; actor sex from `VideoDemographics.csv` when present."""

    name = "crema_d"
    emotion_codes = frozenset(CREMA_D_EMOTIONS)
    def __init__(self, root: str | Path, emotion_map: dict, demographics_file: str = "VideoDemographics.csv"):
        super().__init__(root, emotion_map)
        self.demographics_path = self.root / demographics_file
        self._sex_by_actor: dict[str, str] | None = None

    def label_files(self) -> list[Path]:
        return [self.demographics_path]

    def sex_by_actor(self) -> dict[str, str]:
        """Actor id -> 'male'/'female' from the demographics table (empty when the file is missing)."""
        if self._sex_by_actor is None:
            self._sex_by_actor = {}
            if self.demographics_path.is_file():
                with open(self.demographics_path, newline="", encoding="utf-8-sig") as handle:
                    for row in csv.DictReader(handle):
                        self._sex_by_actor[row["ActorID"].strip()] = row["Sex"].strip().lower()
            else:
                log.warning("crema_d: %s not found; gender will be 'unknown'", self.demographics_path)
        return self._sex_by_actor

    def parse(self, path: Path) -> ClipLabels:
        parts = path.stem.split("_")
        if len(parts) != 4:
            raise ValueError("name is not AAAA_SSS_EEE_LL")
        actor, sentence, emotion, level = parts
        if not (actor.isdigit() and len(actor) == 4):
            raise ValueError(f"actor id {actor!r} is not a four-digit number")
        if sentence not in CREMA_D_SENTENCES:
            raise ValueError(f"unknown sentence code {sentence}")
        if emotion not in CREMA_D_EMOTIONS:
            raise ValueError(f"unknown emotion code {emotion}")
        if level not in CREMA_D_LEVELS:
            raise ValueError(f"unknown level code {level}")
        return ClipLabels(
            speaker=f"crema_d:{actor}",
            gender=self.sex_by_actor().get(actor, "unknown"),
            emotion=emotion,
            intensity=CREMA_D_LEVELS[level],
            text=CREMA_D_SENTENCES[sentence],
        )


# Real TESS copies spell the emotion folders in several ways; all mean one of seven codes.
TESS_EMOTION_SPELLINGS = {
    "angry": "angry",
    "anger": "angry",
    "disgust": "disgust",
    "disgusted": "disgust",
    "fear": "fear",
    "fearful": "fear",
    "happy": "happy",
    "happiness": "happy",
    "neutral": "neutral",
    "sad": "sad",
    "sadness": "sad",
    "ps": "ps",
    "pleasant_surprise": "ps",
    "pleasant_surprised": "ps",
    "pleasant surprise": "ps",
    "surprise": "ps",
    "surprised": "ps",
}
TESS_SPEAKERS = {"OAF", "YAF"}


def tess_emotion_code(spelling: str) -> str | None:
    """The TESS emotion code for a folder or file spelling such as 'Pleasant_surprised'."""
    return TESS_EMOTION_SPELLINGS.get(re.sub(r"[\s-]+", "_", spelling.strip().lower()))


class Tess(Corpus):
    """TESS: `<SPK>_<emotion>/<SPK>_<word>_<emotion>.wav`, speakers OAF (older) and YAF (younger), both
    female. The folder decides speaker and emotion because some file names carry typos."""

    name = "tess"
    emotion_codes = frozenset(TESS_EMOTION_SPELLINGS.values())
    def parse(self, path: Path) -> ClipLabels:
        speaker, _, emotion_spelling = path.parent.name.partition("_")
        speaker = speaker.upper()
        if speaker not in TESS_SPEAKERS:
            raise ValueError(f"folder {path.parent.name!r} does not start with OAF_ or YAF_")
        emotion = tess_emotion_code(emotion_spelling)
        if emotion is None:
            raise ValueError(f"folder {path.parent.name!r} names no known TESS emotion")
        name_parts = path.stem.split("_")
        if len(name_parts) < 3:
            raise ValueError("name is not <SPK>_<word>_<emotion>")
        word = name_parts[1].lower()
        return ClipLabels(speaker=f"tess:{speaker}", gender="female", emotion=emotion, intensity="", text=word)
