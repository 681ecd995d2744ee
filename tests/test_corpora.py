from pathlib import Path

import pytest
from omegaconf import OmegaConf

from emotion_lightning.data.corpora import CremaD, Ravdess, Tess, tess_emotion_code
from tests.helpers.audio import CREMA_D_CODES, RAVDESS_CODES
from tests.helpers.configs import emotion_map


def test_ravdess_config_maps_every_emotion_code_to_the_taxonomy():
    mapping = emotion_map("ravdess")
    assert {code: mapping[code] for code in RAVDESS_CODES} == RAVDESS_CODES


@pytest.mark.parametrize("code", sorted(RAVDESS_CODES))
def test_ravdess_parses_every_emotion_code(code):
    corpus = Ravdess("unused", emotion_map("ravdess"))
    labels = corpus.parse(Path(f"Actor_07/03-01-{code}-02-01-02-07.flac"))
    assert labels.emotion == code
    assert corpus.emotion_map[labels.emotion] == RAVDESS_CODES[code]
    assert (labels.speaker, labels.gender, labels.intensity) == ("ravdess:07", "male", "strong")
    assert labels.text == "Kids are talking by the door"


def test_ravdess_even_actors_are_female_and_statement_two_is_dogs():
    labels = Ravdess("unused", emotion_map("ravdess")).parse(Path("03-01-01-01-02-01-24.wav"))
    assert (labels.gender, labels.intensity, labels.text) == ("female", "normal", "Dogs are sitting by the door")


@pytest.mark.parametrize("name, reason", [
    ("03-02-01-01-01-01-01.wav", "vocal channel 02"),
    ("03-01-09-01-01-01-01.wav", "unknown emotion code 09"),
    ("03-01-01-03-01-01-01.wav", "unknown intensity"),
    ("03-01-01-01-01-01-25.wav", "outside 01-24"),
    ("03-01-01-01.wav", "seven two-digit codes"),
    ("._03-01-01-01-01-01-01.wav", "seven two-digit codes"),
])
def test_ravdess_rejects_bad_names_with_a_reason(name, reason):
    with pytest.raises(ValueError, match=reason):
        Ravdess("unused", emotion_map("ravdess")).parse(Path(name))


def test_ravdess_song_channel_is_selectable():
    labels = Ravdess("unused", emotion_map("ravdess"), vocal_channel="song").parse(Path("03-02-03-01-01-01-02.wav"))
    assert labels.emotion == "03"


@pytest.mark.parametrize("code", sorted(CREMA_D_CODES))
def test_crema_d_parses_every_emotion_and_reads_sex_from_demographics(code, data_dir):
    corpus = CremaD(data_dir / "crema_d", emotion_map("crema_d"))
    labels = corpus.parse(Path(f"AudioWAV/1002_TSI_{code}_HI.wav"))
    assert corpus.emotion_map[labels.emotion] == CREMA_D_CODES[code]
    # fixture demographics: actors alternate Male, Female starting at 1001
    assert (labels.speaker, labels.gender, labels.intensity) == ("crema_d:1002", "female", "high")
    assert labels.text == "The surface is slick"


def test_crema_d_demographics_added_after_the_first_scan_rebuild_the_cached_manifest(data_dir, tmp_path):
    import shutil

    from emotion_lightning.data.manifest import load_manifest

    root = tmp_path / "crema_d"
    shutil.copytree(data_dir / "crema_d", root)
    demographics = root / "VideoDemographics.csv"
    kept = demographics.read_bytes()
    demographics.unlink()
    before, _ = load_manifest([CremaD(root, emotion_map("crema_d"))], tmp_path / "cache")
    assert set(before["gender"]) == {"unknown"}
    demographics.write_bytes(kept)  # the cached manifest of the same audio must not keep "unknown"
    after, _ = load_manifest([CremaD(root, emotion_map("crema_d"))], tmp_path / "cache")
    assert set(after["gender"]) == {"male", "female"}


@pytest.mark.parametrize("corpus, emotion_map_, code", [
    (Tess, {"surprise": "surprised"}, "surprise"),  # TESS's code is ps
    (Ravdess, {1: "neutral"}, "1"),  # an unquoted YAML key: RAVDESS's codes are "01".."08"
    (CremaD, {"ang": "angry"}, "ang"),
])
def test_emotion_map_codes_no_file_carries_are_refused_naming_the_config(corpus, emotion_map_, code):
    # such a key matched no clip, so its class silently vanished from the data
    with pytest.raises(ValueError, match=rf"emotion_map has codes \['{code}'\] that no .* conf/corpus/{corpus.name}"):
        corpus("unused", emotion_map_)


@pytest.mark.parametrize("level, intensity", [("LO", "low"), ("MD", "medium"), ("HI", "high"), ("XX", "unspecified")])
def test_crema_d_levels(level, intensity, tmp_path):
    labels = CremaD(tmp_path, emotion_map("crema_d")).parse(Path(f"1001_DFA_ANG_{level}.wav"))
    assert labels.intensity == intensity
    assert labels.gender == "unknown"  # no demographics file in tmp_path


@pytest.mark.parametrize("name, reason", [
    ("1001_DFA_XYZ_HI.wav", "unknown emotion code XYZ"),
    ("1001_ABC_ANG_HI.wav", "unknown sentence code"),
    ("1001_DFA_ANG_ZZ.wav", "unknown level"),
    ("101_DFA_ANG_HI.wav", "four-digit"),
    ("1001_DFA_ANG.wav", "AAAA_SSS_EEE_LL"),
])
def test_crema_d_rejects_bad_names(name, reason, tmp_path):
    with pytest.raises(ValueError, match=reason):
        CremaD(tmp_path, emotion_map("crema_d")).parse(Path(name))


@pytest.mark.parametrize("folder, code", [
    ("OAF_angry", "angry"), ("OAF_disgust", "disgust"), ("OAF_Fear", "fear"), ("YAF_fear", "fear"),
    ("OAF_happy", "happy"), ("YAF_neutral", "neutral"), ("OAF_Sad", "sad"), ("YAF_sad", "sad"),
    ("OAF_Pleasant_surprise", "ps"), ("YAF_pleasant_surprised", "ps"), ("oaf_ps", "ps"),
])
def test_tess_folder_spellings(folder, code):
    corpus = Tess("unused", emotion_map("tess"))
    labels = corpus.parse(Path(folder) / f"{folder[:3].upper()}_dog_{code}.wav")
    assert labels.emotion == code
    assert labels.speaker == f"tess:{folder[:3].upper()}"
    assert labels.text == "dog"
    assert labels.gender == "female"


def test_tess_pleasant_surprise_maps_to_surprised_and_fear_to_fearful():
    mapping = emotion_map("tess")
    assert (mapping["ps"], mapping["fear"]) == ("surprised", "fearful")
    assert tess_emotion_code("Pleasant surprise") == "ps"


def test_tess_folder_wins_over_typos_in_file_names():
    # Real copies hold names such as 'OA_bite_neutral.wav' and 'YAF_neat_disgust.wav' in other folders.
    labels = Tess("unused", emotion_map("tess")).parse(Path("OAF_neutral/OA_bite_nuetral.wav"))
    assert (labels.speaker, labels.emotion, labels.text) == ("tess:OAF", "neutral", "bite")


@pytest.mark.parametrize("path, reason", [("XYZ_angry/XYZ_dog_angry.wav", "OAF_ or YAF_"),
                                          ("OAF_bored/OAF_dog_bored.wav", "no known TESS emotion")])
def test_tess_rejects_unknown_folders(path, reason):
    with pytest.raises(ValueError, match=reason):
        Tess("unused", emotion_map("tess")).parse(Path(path))


def test_emotion_map_outside_the_taxonomy_is_refused():
    with pytest.raises(ValueError, match="not in the unified taxonomy"):
        Ravdess("unused", {"01": "bored"})
