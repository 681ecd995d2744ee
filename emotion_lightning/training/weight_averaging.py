"""An exponential moving average of the weights, validated, checkpointed and tested in their place."""

from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.trainer.states import TrainerFn


class ExponentialMovingAverage(EMAWeightAveraging):
    """Lightning's EMA callback (`callbacks=ema`): each optimizer step moves the average `1 - decay` of the way
    to the new weights; validation scores the average, and a checkpoint's `state_dict` holds it (the raw weights
    ride along for resuming), so the best checkpoint is the best average.

    Lightning's own callback, still attached when `trainer.test(ckpt_path="best")` runs after fit, reloads the
    raw weights over the average there: a run would then be selected on one set of weights and tested on another.
    Outside fit the checkpoint's `state_dict` (the average) is left as the model, as eval and predict load it,
    and a validation pass after fit (to fit the temperature) scores that checkpoint, not the final average that
    Lightning's callback would swap in.
    """

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_validation_epoch_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_validation_epoch_end(trainer, pl_module)

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
