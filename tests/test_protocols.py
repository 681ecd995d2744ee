import json

import numpy as np
import pandas as pd
import pytest

from emotion_lightning.evaluation.aggregate import aggregate, bootstrap_ci, cross_corpus_matrix, markdown_table, read_runs
from emotion_lightning.data.splits import CrossCorpusSplit, FileSplit, SpeakerKFoldSplit, check_speaker_disjoint
from emotion_lightning.evaluation.test_results import breakdowns
from tests.helpers.configs import toy_manifest


def test_speaker_kfold_tests_every_clip_exactly_once_over_the_folds():
    manifest = toy_manifest()
    times_tested = np.zeros(len(manifest), dtype=int)
    for fold in range(6):
        assignment = SpeakerKFoldSplit(k=6, fold=fold).assign(manifest)
        check_speaker_disjoint(manifest, assignment)
        times_tested += assignment == "test"
        test = manifest[assignment == "test"][["speaker", "gender"]].drop_duplicates()
        assert len(test) == 4 and test["gender"].value_counts().to_dict() == {"male": 2, "female": 2}
        assert manifest[assignment == "val"]["speaker"].nunique() == 4
        assert manifest[assignment == "train"]["speaker"].nunique() == 16
    assert (times_tested == 1).all()


def test_val_fold_is_the_next_test_fold():
    manifest = toy_manifest()
    val_of_0 = set(manifest["speaker"][SpeakerKFoldSplit(k=6, fold=0).assign(manifest) == "val"])
    test_of_1 = set(manifest["speaker"][SpeakerKFoldSplit(k=6, fold=1).assign(manifest) == "test"])
    assert val_of_0 == test_of_1


def test_leave_one_speaker_out_when_k_equals_the_speakers():
    manifest = toy_manifest()
    tested = [set(manifest["speaker"][SpeakerKFoldSplit(k=24, fold=f).assign(manifest) == "test"]) for f in range(24)]
    assert all(len(s) == 1 for s in tested) and set().union(*tested) == set(manifest["speaker"])


@pytest.mark.parametrize("kwargs, message", [({"k": 6, "fold": 6}, "outside 0..5"), ({"k": 2}, "k >= 3")])
def test_kfold_settings_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SpeakerKFoldSplit(**kwargs)


def test_kfold_with_more_folds_than_speakers_is_refused():
    with pytest.raises(ValueError, match="corpus ravdess has 4 speakers, fewer than split.k=6"):
        SpeakerKFoldSplit(k=6).assign(toy_manifest({"ravdess": 4}))


def test_cross_corpus_tests_on_every_clip_of_the_other_corpus():
    manifest = toy_manifest({"ravdess": 24, "crema_d": 10, "tess": 2})
    assignment = CrossCorpusSplit(train_corpora=["ravdess"], test_corpora=["crema_d"]).assign(manifest)
    corpus = manifest["corpus"].to_numpy()
    assert (assignment[corpus == "crema_d"] == "test").all()
    assert (assignment[corpus == "tess"] == "unused").all()
    assert set(assignment[corpus == "ravdess"]) == {"train", "val"}
    assert manifest["speaker"][assignment == "val"].nunique() == 4
    check_speaker_disjoint(manifest, assignment)
    with pytest.raises(ValueError, match=r"corpora \['tess'\] have no clips"):
        CrossCorpusSplit(train_corpora=["ravdess"], test_corpora=["tess"]).assign(toy_manifest())
    with pytest.raises(ValueError, match="in both"):
        CrossCorpusSplit(train_corpora=["ravdess"], test_corpora=["ravdess"])


def file_manifest() -> pd.DataFrame:
    return pd.DataFrame({"path": ["/data/ravdess/Actor_01/a.wav", "/data/ravdess/Actor_02/a.wav",
                                  "/data/ravdess/Actor_02/b.wav", "/data/ravdess/Actor_03/c.wav"],
                         "speaker": ["1", "2", "2", "3"]})


def test_file_split_matches_names_and_relative_paths_from_csv_and_jsonl(tmp_path):
    (tmp_path / "split.csv").write_text("file,part\nActor_01/a.wav,train\nb.wav,val\n/data/ravdess/Actor_03/c.wav,test\n")
    assignment = FileSplit(str(tmp_path / "split.csv")).assign(file_manifest())
    assert assignment.tolist() == ["train", "unused", "val", "test"]
    (tmp_path / "split.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"file": "Actor_02/a.wav", "part": "test"}, {"file": "c.wav", "part": "train"}]))
    assert FileSplit(str(tmp_path / "split.jsonl")).assign(file_manifest()).tolist() == ["unused", "test", "unused", "train"]


@pytest.mark.parametrize("content, message", [
    ("file,part\nActor_09/z.wav,train\n", r"1 listed file\(s\) are not in the data, e.g. \['Actor_09/z.wav'\]"),
    ("file,part\na.wav,train\n", "match several clips"),
    ("file,part\nb.wav,dev\n", r"part values \['dev'\]"),
    ("name,set\nb.wav,train\n", "needs columns 'file' and 'part'"),
])
def test_file_split_errors_are_clear(content, message, tmp_path):
    (tmp_path / "split.csv").write_text(content)
    with pytest.raises(ValueError, match=message):
        FileSplit(str(tmp_path / "split.csv")).assign(file_manifest())


def test_file_split_missing_file_names_the_setting(tmp_path):
    with pytest.raises(FileNotFoundError, match="split.path=.*nope.csv does not exist"):
        FileSplit(str(tmp_path / "nope.csv")).assign(file_manifest())


def emobox_line(actor: int, emotion_code: str, emo: str) -> str:
    name = f"03-01-{emotion_code}-01-01-01-{actor:02d}"
    return json.dumps({"key": f"ravdess-{name}", "dataset": "ravdess", "type": "raw", "sample_rate": 48000,
                       "wav": f"downloads/ravdess/audio/Audio_Speech_Actors_01-24/Actor_{actor:02d}/{name}.wav",
                       "emo": emo, "channel": 1})


def test_file_split_reads_emobox_fold_files_matching_wav_ids_to_flac_and_carves_val_by_speaker(tmp_path):
    actors = range(1, 11)
    manifest = pd.DataFrame([{"path": f"/here/ravdess/Audio_Speech_Actors_01-24/Actor_{a:02d}/03-01-{code}-01-01-01-{a:02d}.flac",
                              "corpus": "ravdess", "speaker": f"ravdess:{a:02d}", "gender": "male" if a % 2 else "female",
                              "emotion": emotion} for a in actors for code, emotion in (("01", "neutral"), ("05", "angry"))])
    train, test = tmp_path / "ravdess_train_fold_1.jsonl", tmp_path / "ravdess_test_fold_1.jsonl"
    train.write_text("\n".join(emobox_line(a, c, e) for a in actors[2:] for c, e in (("01", "Neutral"), ("05", "Angry"))))
    test.write_text("\n".join(emobox_line(a, c, e) for a in actors[:2] for c, e in (("01", "Neutral"), ("05", "Angry"))))
    split = FileSplit(train=str(train), test=str(test), val_fraction=0.25, seed=0)
    assignment = split.assign(manifest)
    speakers = manifest["speaker"].to_numpy()
    assert set(speakers[assignment == "test"]) == {"ravdess:01", "ravdess:02"}
    val = set(speakers[assignment == "val"])
    assert len(val) == 2 and not val & {"ravdess:01", "ravdess:02"}
    assert {int(s[-2:]) % 2 for s in val} == {0, 1}  # one speaker of each gender
    assert (assignment == "train").sum() == 12 and (assignment != "unused").all()
    check_speaker_disjoint(manifest, assignment)
    np.testing.assert_array_equal(assignment, FileSplit(train=str(train), test=str(test), val_fraction=0.25).assign(manifest))
    with pytest.raises(ValueError, match="listed in two different parts"):
        FileSplit(train=str(train), test=str(train)).assign(manifest)


def test_file_split_needs_one_kind_of_file_setting(tmp_path):
    with pytest.raises(ValueError, match="split.path .* or split.train and split.test"):
        FileSplit()
    with pytest.raises(ValueError, match="split.train and split.test are both needed"):
        FileSplit(train="a.jsonl")


def test_breakdowns_per_speaker_and_gender():
    rows = pd.DataFrame({"corpus": ["r"] * 4, "speaker": ["a", "a", "b", "b"], "gender": ["male", "male", "female", "female"],
                         "intensity": ["normal", "strong", "normal", ""]})
    true, predicted = np.array([0, 1, 0, 1]), np.array([0, 1, 1, 1])
    result = breakdowns(rows, true, predicted, ["x", "y"])
    assert result["speaker"]["a"]["wa"] == 1.0 and result["speaker"]["b"]["wa"] == 0.5
    assert result["gender"]["female"] == {"ua": 0.5, "wa": 0.5, "macro_f1": pytest.approx(1 / 3), "clips": 2}
    assert set(result["intensity"]) == {"normal", "strong", "unspecified"}
    assert result["corpus"]["r"]["ua"] == 0.75


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_agreement():
    low, high = bootstrap_ci([0.5, 0.55, 0.6, 0.65, 0.7, 0.52])
    assert low < np.mean([0.5, 0.55, 0.6, 0.65, 0.7, 0.52]) < high
    assert bootstrap_ci([0.6] * 6) == (pytest.approx(0.6), pytest.approx(0.6))


def test_aggregate_groups_runs_and_builds_tables(tmp_path):
    def write(name, **metrics):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(metrics))
    for fold, ua in enumerate([0.5, 0.6, 0.7]):
        write(f"k{fold}", model="resnet", data="ravdess", split="speaker_kfold", seed=0, params=10, train_seconds=fold,
              test_ua=ua, test_wa=ua, best_val_ua=ua + 0.05,
              test_macro_f1=ua, train_corpora=["ravdess"], test_corpora=["ravdess"])
    write("x", model="resnet", data="combined", split="cross_corpus", seed=0, test_ua=0.3, test_wa=0.3,
          test_macro_f1=0.3, train_corpora=["ravdess"], test_corpora=["crema_d"])
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "metrics.json").write_text("{not json")
    runs = read_runs(tmp_path)
    summary = {entry["split"]: entry for entry in aggregate(runs)}
    assert summary["speaker_kfold"]["runs"] == 3
    assert summary["speaker_kfold"]["test_ua"]["mean"] == pytest.approx(0.6)
    assert summary["speaker_kfold"]["test_ua"]["sd"] == pytest.approx(0.1)
    assert summary["speaker_kfold"]["val_ua"] == pytest.approx(0.65) and summary["cross_corpus"]["val_ua"] is None
    table = markdown_table(list(summary.values()))
    assert "| resnet | none | ravdess | speaker_kfold | clean |  | 10 | 3 | 0.650 | 0.600 ± 0.100 [" in table
    assert "| resnet | none | combined | cross_corpus | clean |  |  | 1 |  | 0.300 |" in table  # no val UA recorded
    assert summary["speaker_kfold"]["train_seconds"] == pytest.approx(1.0)
    matrix = cross_corpus_matrix(runs)
    assert matrix.loc["resnet: ravdess", "crema_d"] == pytest.approx(0.3) and matrix.shape == (1, 1)
    # another model on the same corpora is its own row, never averaged into resnet's cell
    write("y", model="simple_cnn", data="combined", split="cross_corpus", seed=0, test_ua=0.5, test_wa=0.5,
          test_macro_f1=0.5, train_corpora=["ravdess"], test_corpora=["crema_d"])
    matrix = cross_corpus_matrix(read_runs(tmp_path))
    assert matrix["crema_d"].to_dict() == {"resnet: ravdess": pytest.approx(0.3), "simple_cnn: ravdess": pytest.approx(0.5)}
