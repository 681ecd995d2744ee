#!/usr/bin/env bash
# The leaderboard rows that predate calibration, rerun on the 6 speaker folds for their ECE, one training at a time
# on a 2-core x86 CPU (about 2.5 hours in all; the LSTM and the waveform CNN take most of it). Run it again to
# resume: finished jobs are skipped and a killed one resumes from its last.ckpt
# (docs/sweeps-and-tracking.md#resuming-a-sweep). Set EMOTION_DATA_DIR and EMOTION_MODELS_DIR first if the data and
# encoders are not under the project's data/ and models/.
#
# Nothing is chosen here: each row's UA is replaced by its rerun (the earlier figure moves to the search log), and
# each network's sweep is calibrated, as soon as it ends, with one temperature on all its validation clips. The
# SVM's probabilities are Platt-scaled inside its fit and the random forest's are vote shares: they fit no
# temperature.
set -u
cd "$(dirname "$0")/../../.."
sweep() {  # NAME OVERRIDES...
  local name=$1; shift
  echo "$(date -Is) start $name" >> outputs/queue_calibration_reruns.log
  emotion-lightning train -m "$@" split=speaker_kfold split.fold=0,1,2,3,4,5 logger=none \
    hydra.sweep.dir=outputs/multiruns/$name > outputs/q_$name.log 2>&1
  echo "$(date -Is) end $name rc=$?" >> outputs/queue_calibration_reruns.log
  case $name in svm|random_forest) ;;  # no temperature: see above
    *) emotion-lightning calibrate outputs/multiruns/$name >> outputs/queue_calibration_reruns.log 2>&1 ;; esac
}
mkdir -p outputs
sweep svm model=svm
sweep random_forest model=random_forest
sweep whisper model=whisper
sweep simple_cnn model=simple_cnn
sweep resnet model=resnet
sweep densenet model=densenet
sweep transformer model=transformer
sweep lstm model=lstm
sweep simple_cnn_audio model=simple_cnn_audio
