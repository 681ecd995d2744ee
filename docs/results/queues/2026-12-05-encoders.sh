#!/usr/bin/env bash
# The encoder-size queue of 2026-12-05, one training at a time on a 2-core x86 CPU. Run it again to resume: finished
# jobs are skipped and a killed one resumes from its last.ckpt (docs/sweeps-and-tracking.md#resuming-a-sweep).
# Set EMOTION_DATA_DIR and EMOTION_MODELS_DIR first if the data and encoders are not under the project's data/ and
# models/.
#
# Decision rule, written before any result of this queue:
#   experiment=best_pretrained becomes the pretrained recipe with the highest mean validation UA over the 6 folds of
#   split=speaker_kfold, among those run on all 6 folds: tiny.en frozen (0.667), base frozen (0.686), tiny.en full
#   (0.759), tiny.en partial, base partial, base full. A lead under 0.005 goes to the cheaper fit. Test UA is read
#   only after the choice and does not change it.
#   The partial recipe (experiment=pretrained_partial) is fixed a priori: pretrained_finetune's optimiser, schedule
#   and regularisers with time masks of the cached frames in place of SpecAugment; nothing in it is tuned here.
set -u
cd "$(dirname "$0")/../../.."
#   best_scratch's 18 runs and tiny.en's full fine-tuning are rerun for their calibration (their rows predate it);
#   its seed-0 runs were made first, as their own sweep, and copied into the 18-run sweep's job dirs (job = 3 x fold
#   + seed), where they count as finished.
sweep() {  # NAME OVERRIDES...
  local name=$1; shift
  echo "$(date -Is) start $name" >> outputs/queue_encoders.log
  emotion-lightning train -m "$@" logger=none hydra.sweep.dir=outputs/multiruns/$name > outputs/q_$name.log 2>&1
  echo "$(date -Is) end $name rc=$?" >> outputs/queue_encoders.log
}
mkdir -p outputs
sweep best_scratch_seed0 experiment=best_scratch split=speaker_kfold split.fold=0,1,2,3,4,5 seed=0
sweep pretrained_partial_base experiment=pretrained_partial model=whisper_base_partial split=speaker_kfold split.fold=0,1,2,3,4,5
sweep best_scratch experiment=best_scratch split=speaker_kfold split.fold=0,1,2,3,4,5 seed=0,1,2
sweep pretrained_partial experiment=pretrained_partial split=speaker_kfold split.fold=0,1,2,3,4,5
sweep pretrained_finetune experiment=pretrained_finetune split=speaker_kfold split.fold=0,1,2,3,4,5
sweep pretrained_finetune_base experiment=pretrained_finetune model=whisper_base_finetune split=speaker_kfold split.fold=0,1,2,3,4,5
for name in best_scratch pretrained_partial_base pretrained_partial pretrained_finetune pretrained_finetune_base; do
  emotion-lightning calibrate outputs/multiruns/$name >> outputs/queue_encoders.log 2>&1
done
# Added after the rule's choice, outside it: the two fine-tuned encoders averaged (evaluation only), measured beside
# best_pretrained.
sweep pretrained_finetune_ensemble model=ensemble 'model.sweeps=[outputs/multiruns/pretrained_finetune,outputs/multiruns/pretrained_finetune_base]' split=speaker_kfold split.fold=0,1,2,3,4,5
emotion-lightning calibrate outputs/multiruns/pretrained_finetune_ensemble >> outputs/queue_encoders.log 2>&1
