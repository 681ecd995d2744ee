"""The LightningModule: front-end + network, cross-entropy, optimiser and scheduler, metrics."""

import random
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn

from emotion_lightning.data.errors import MissingFileError, SettingError
from emotion_lightning.evaluation import calibration
from emotion_lightning.evaluation.metrics import confusion_matrix, metrics_from_confusion
from emotion_lightning.models.random_state import all_ranks_random_states, restore_rank_random_states


class EmotionClassifier(L.LightningModule):
    """Waveform batch -> logits over `classes`.

    `optimizer` and `scheduler` are partials (Hydra `_partial_: true`) completed with the parameters and
    the optimiser. `class_weighting='balanced'` weights the loss by inverse training-class frequency;
    the weights come from the DataModule through `set_class_weights`. `batch_augment` (noise, gain and
    band-limiting on the waveform batch, models/augment.py), `spec_augment` (masks on the front-end's
    log-mels) and `mixup_alpha` (blending pairs of clips) act in training steps only, on the model's device.
    `label_smoothing` spreads that share of each target over the other classes (cross-entropy's own option).
    Test batches of shape (batch, crops, samples) are scored per crop and their probabilities averaged
    (test-time augmentation, `data.test_crops`).
    `temperature` divides the log-probabilities before the softmax of reported probabilities (temperature
    scaling, fitted on validation after training: training/fit.py); it never changes an argmax. 1 = as trained.
    `run_config`, the resolved run config, is saved into checkpoints so eval and predict can rebuild this
    module (and its audio settings) without Hydra.
    """

    def __init__(self, network: nn.Module, classes: list[str], frontend: nn.Module | None = None,
                 optimizer: partial = partial(torch.optim.Adam, lr=1e-3), scheduler: partial | None = None,
                 class_weighting: str = "none", monitor: str = "val_ua", name: str = "model",
                 spec_augment: nn.Module | None = None, mixup_alpha: float = 0.0, run_config: dict | None = None,
                 batch_augment: nn.Module | None = None, label_smoothing: float = 0.0):
        super().__init__()
        if class_weighting not in ("none", "balanced"):
            raise SettingError(f"model.class_weighting={class_weighting!r}; use 'none' or 'balanced'")
        if spec_augment is not None and frontend is None:
            if not hasattr(network, "augment_log_mel"):
                raise SettingError(f"augment.spec_augment masks log-mels, but model {name!r} has no log-mel front-end "
                                   "(it reads the waveform); use augment=waveform or augment=mixup for it")
            network.augment_log_mel(spec_augment)  # a pretrained encoder's own log-mel (fine-tuned Whisper)
            spec_augment = None
        if not 0 <= label_smoothing < 1:
            raise SettingError(f"model.label_smoothing={label_smoothing} must be in [0, 1) (0 turns it off)")
        if mixup_alpha < 0:
            raise SettingError(f"augment.mixup_alpha={mixup_alpha} must be >= 0 (0 turns mixup off)")
        self.frontend = frontend if frontend is not None else nn.Identity()
        self.network = network
        self.classes = list(classes)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.class_weighting, self.monitor, self.name = class_weighting, monitor, name
        self.label_smoothing = float(label_smoothing)
        self.register_buffer("class_weights", torch.ones(len(self.classes)))
        self.run_config = run_config
        # (log-probabilities, true) per validation or test batch, scored at the epoch's end (`scored_clips`)
        self._outputs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.test_results: dict | None = None
        self.val_scores: tuple[np.ndarray, np.ndarray] | None = None  # the last validation's (log-probs, true)
        self.val_positions: np.ndarray | None = None  # ... and their clips' positions in the validation dataset
        self.temperature = 1.0
        self.trainable = True  # an ensemble of trained checkpoints is only tested
        self.spec_augment, self.mixup_alpha = spec_augment, float(mixup_alpha)
        self.batch_augment = batch_augment  # waveform augmentation of whole training batches (models/augment.py)
        # What the checkpoint records of the data it was fitted on: clip IDs of its train and val parts, and the
        # config choices (data, split, ...) by name. Set by the training job, read back by from_checkpoint.
        self.trained_clips: dict[str, list[str]] | None = None
        self.trained_choices: dict[str, str] | None = None
        self.checkpoint_path: str | None = None  # the file from_checkpoint read it from

    def set_training_data(self, clips: dict[str, list[str]], choices: dict[str, str]) -> None:
        """Record the clip IDs of the train and val parts (and the config choices) in every checkpoint, so that
        eval can refuse to test on clips the model has seen."""
        self.trained_clips, self.trained_choices = clips, choices

    def set_class_weights(self, weights: torch.Tensor) -> None:
        if self.class_weighting == "balanced":
            self.class_weights.copy_(weights)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.network(self.frontend(waveform))

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels, weight=self.class_weights, label_smoothing=self.label_smoothing)

    def training_step(self, batch, batch_index):
        waveform, labels = batch
        if self.batch_augment is not None:
            waveform = self.batch_augment(waveform)
        mix, partner = 1.0, None
        if self.mixup_alpha > 0:  # mixup (Zhang et al., 2018): blend pairs of clips and their targets alike
            mix = float(torch.distributions.Beta(self.mixup_alpha, self.mixup_alpha).sample())
            partner = torch.randperm(len(labels), device=labels.device)
            waveform = mix * waveform + (1 - mix) * waveform[partner]
        features = self.frontend(waveform)
        if self.spec_augment is not None:
            features = self.spec_augment(features)
        logits = self.network(features)
        loss = self._loss(logits, labels)
        if partner is not None:
            loss = mix * loss + (1 - mix) * self._loss(logits, labels[partner])
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(labels),
                 sync_dist=True)  # the mean over every rank's shard, not rank 0's alone
        return loss

    def validation_step(self, batch, batch_index):
        waveform, labels = batch
        logits = self(waveform)
        self.log("val_loss", self._loss(logits, labels), prog_bar=True, batch_size=len(labels), sync_dist=True)
        self._outputs.append((logits.float().log_softmax(dim=1), labels))

    def on_validation_epoch_end(self):
        self.val_positions, log_probabilities, true = self.scored_clips(self.trainer.val_dataloaders)
        self.val_scores = (log_probabilities, true)
        if self.trainer.state.fn != TrainerFn.FITTING:
            return  # a validation pass after fit (to fit the temperature) is not part of the learning curve
        results = metrics_from_confusion(confusion_matrix(true, log_probabilities.argmax(axis=1), len(self.classes)),
                                         self.classes)
        # every rank scored the same gathered clips: the same values everywhere, nothing to reduce
        self.log_dict({f"val_{key}": results[key] for key in ("wa", "ua", "macro_f1")}, prog_bar=True)

    def test_step(self, batch, batch_index):
        waveform, labels = batch
        if waveform.dim() == 3:  # (batch, crops, samples): the log of the mean of each clip's crop probabilities
            crops = waveform.shape[1]
            log_probabilities = self(waveform.flatten(0, 1)).float().log_softmax(dim=1).unflatten(0, (-1, crops))
            log_probabilities = log_probabilities.logsumexp(dim=1) - np.log(crops)
        else:
            log_probabilities = self(waveform).float().log_softmax(dim=1)
        self._outputs.append((log_probabilities, labels))

    def on_test_epoch_end(self):
        positions, log_probabilities, true = self.scored_clips(self.trainer.test_dataloaders)
        predicted = log_probabilities.argmax(axis=1)
        confusion = confusion_matrix(true, predicted, len(self.classes))
        results = metrics_from_confusion(confusion, self.classes)
        self.log_dict({f"test_{key}": results[key] for key in ("ua", "wa", "macro_f1")}, sync_dist=False)
        raw, calibrated = (calibration.probabilities(log_probabilities, t) for t in (1.0, self.temperature))
        # `positions`: each prediction's clip, as its position in the test dataset (what predictions.csv matches);
        # the probabilities reported are the calibrated ones, the scores before scaling are kept beside them
        self.test_results = {**results, "confusion_matrix": confusion.tolist(), "predicted": predicted,
                             "probabilities": calibrated, "positions": positions,
                             "calibration": {"temperature": self.temperature,
                                             "before": calibration.calibration_scores(raw, true) if len(true) else None,
                                             "after": calibration.calibration_scores(calibrated, true) if len(true)
                                             else None},
                             "reliability": {"before scaling": calibration.bin_table(raw, true),
                                             "after scaling": calibration.bin_table(calibrated, true)}
                             if self.temperature != 1.0 else {"as trained": calibration.bin_table(raw, true)}}

    def scored_clips(self, loader) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """This epoch's (clip positions in the dataset, probabilities, true labels), each clip exactly once, in
        dataset order. A batch's clips are the loader's sampler's next indices; under several processes every
        rank's shard is gathered and the DistributedSampler's padding (clips repeated so that every rank gets
        as many) dropped, so the scores are those of one process."""
        outputs, self._outputs = self._outputs, []
        num_classes = len(self.classes)
        probabilities = torch.cat([p for p, _ in outputs]) if outputs else torch.zeros(0, num_classes)
        true = torch.cat([t for _, t in outputs]) if outputs else torch.zeros(0, dtype=torch.long)
        # the first ones: a stage cut short (fast_dev_run, limit_*_batches) ran only the first batches
        positions = torch.as_tensor(list(loader.sampler)[:len(true)], dtype=torch.long, device=true.device)
        if self.trainer.world_size > 1:  # equal shards (padded), so all_gather's equal shapes hold
            probabilities, true, positions = (self.all_gather(tensor).flatten(0, 1)
                                              for tensor in (probabilities.contiguous(), true, positions))
        positions, first = np.unique(positions.cpu().numpy(), return_index=True)
        return positions, probabilities.cpu().numpy()[first], true.cpu().numpy()[first]

    def configure_optimizers(self):
        # networks with learning rates of their own per part (layer-wise decay in a fine-tuned encoder) group them
        lr = self.optimizer_factory.keywords.get("lr")
        groups = self.network.parameter_groups(lr) if hasattr(self.network, "parameter_groups") and lr else \
            self.parameters()
        optimizer = self.optimizer_factory(params=groups)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": self.monitor}}

    def on_fit_start(self) -> None:
        # Under DDP every rank draws its own crops, masks and mixup (the run's seed + its rank). Lightning reseeds all
        # ranks from PL_GLOBAL_SEED, which stays the run's seed so that the ranks share one shuffle (disjoint
        # shards); so the per-rank streams are set here, after that reseeding, and only in a fresh run (a resumed
        # one continues the streams its checkpoint restored).
        if self.trainer.world_size > 1 and self.trainer.ckpt_path is None and self.run_config:
            seed = int(self.run_config.get("seed") or 0) + self.global_rank
            random.seed(seed)
            np.random.seed(seed % 2**32)
            torch.manual_seed(seed)

    def on_train_start(self) -> None:
        self.temperature = 1.0  # one fitted for weights this training changes (a resumed checkpoint's) holds no more

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["run_config"] = self.run_config
        checkpoint["classes"] = self.classes
        checkpoint["random_states"] = all_ranks_random_states()  # by rank: each continues its own streams
        checkpoint["clips"] = self.trained_clips
        checkpoint["choices"] = self.trained_choices
        checkpoint["temperature"] = self.temperature

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.temperature = float(checkpoint.get("temperature", 1.0))  # 1: written before calibration existed
        saved = checkpoint.get("random_states")
        if saved is not None:  # a dict: written by one process before states were kept per rank
            restore_rank_random_states(saved if isinstance(saved, list) else [saved], self.global_rank)

    @classmethod
    def from_checkpoint(cls, path: str | Path, map_location: str = "cpu") -> "EmotionClassifier":
        """Rebuild a trained classifier from a checkpoint written by `emotion_lightning.train`."""
        path = Path(path)
        if not path.is_file():
            raise MissingFileError(f"checkpoint {path} does not exist; pass the .ckpt in a run dir's checkpoints/")
        checkpoint = torch.load(path, map_location=map_location, weights_only=False)
        run_config = checkpoint.get("run_config") if isinstance(checkpoint, dict) else None
        if not run_config:
            raise SettingError(f"{path} was not written by emotion_lightning.train (it has no run_config)")
        model = instantiate(run_config["model"], _partial_=True)(run_config=run_config)
        model.load_state_dict(checkpoint["state_dict"])
        model.trained_clips, model.trained_choices = checkpoint.get("clips"), checkpoint.get("choices")
        model.temperature = float(checkpoint.get("temperature", 1.0))
        model.checkpoint_path = str(path)
        return model.eval()
