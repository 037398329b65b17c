"""A recipe as a KerasTuner ``HyperModel``: ``build(hp)`` builds the recipe's model with the
trial's model options, ``fit(hp, model, ...)`` trains it at the trial's batch size and learning
rate (batch size belongs in ``fit``, as KerasTuner's maintainers recommend).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import keras_tuner as kt
import tensorflow as tf

from kzoo.data.augment import augmentation
from kzoo.data.datasets import Splits
from kzoo.data.pipeline import make_pipeline
from kzoo.recipes.recipe import Recipe
from kzoo.training.flops import steps_per_execution_for
from kzoo.training.losses import make_loss
from kzoo.training.optimizers import make_optimizer
from kzoo.training.precision import precision_policy
from kzoo.training.run import seed_everything
from kzoo.training.train import adapt_to_data, build_for
from kzoo.tuning.space import Tunable, apply_values, format_values
from kzoo.tuning.table import OBJECTIVE, SETTINGS_HP


class RecipeHyperModel(kt.HyperModel):
    """A recipe as a KerasTuner ``HyperModel``, its hyperparameters from ``space``.

    ``build(hp)`` builds the recipe's model with the trial's model options; ``fit(hp, model,
    train, validation, epochs=...)`` compiles it with the trial's optimizer settings and trains
    it on the unbatched ``train`` dataset at the trial's batch size. A trial whose loss becomes
    NaN, or that runs out of memory, fails (``FailedTrialError``) and the search goes on.
    """

    def __init__(self, recipe: Recipe, space: Sequence[Tunable], splits: Splits,
                 settings_digest: str | None = None):
        super().__init__(name=recipe.name)
        self.recipe, self.space, self.splits = recipe, list(space), splits
        self.settings_digest = settings_digest

    def declare_hyperparameters(self, hp: kt.HyperParameters) -> None:
        for tunable in self.space:
            tunable.declare(hp)
        if self.settings_digest:  # a chief's workers check theirs against it
            hp.Fixed(SETTINGS_HP, self.settings_digest)

    def recipe_for(self, hp: kt.HyperParameters) -> Recipe:
        """The recipe with the trial's values."""
        return apply_values(self.recipe, {t.name: t.declare(hp) for t in self.space})

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        recipe = self.recipe_for(hp)
        seed_everything(recipe.seed)  # every trial starts from the same initial weights
        with precision_policy(recipe.precision):
            return build_for(recipe, self.splits)

    def fit(self, hp, model, train, validation, *, epochs, initial_epoch=0, callbacks=None,
            verbose="auto", **kwargs):
        recipe = self.recipe_for(hp)
        steps = math.ceil(len(train) / recipe.batch_size)
        adapt_to_data(model, train, recipe.seed)
        model.compile(optimizer=make_optimizer(recipe.optimizer, steps, epochs),
                      loss=make_loss(recipe.loss, recipe.label_smoothing), metrics=["accuracy"],
                      steps_per_execution=steps_per_execution_for(
                          recipe.steps_per_execution, model, recipe.batch_size, steps))
        model.optimizer.iterations.assign(initial_epoch * steps)  # Hyperband continues a schedule
        train_data = make_pipeline(train, recipe.batch_size, shuffle_seed=recipe.seed,
                                   augment=augmentation(recipe.augmentation, seed=recipe.seed))
        try:
            history = model.fit(
                train_data, validation_data=make_pipeline(validation, recipe.batch_size),
                epochs=epochs, initial_epoch=initial_epoch, shuffle=False, verbose=verbose,
                callbacks=[keras.callbacks.TerminateOnNaN(), *(callbacks or [])], **kwargs,
            )
        except Exception as error:
            if not out_of_memory(error):
                raise
            reason = (getattr(error, "message", None) or str(error)).strip().splitlines()
            raise kt.errors.FailedTrialError(
                f"out of memory with batch_size={recipe.batch_size} "
                f"({reason[0] if reason else type(error).__name__}); search smaller batch sizes"
            ) from error
        return self._results(history.history, initial_epoch, hp)

    def _results(self, logs: dict[str, list[float]], initial_epoch: int, hp) -> dict[str, float]:
        """The metrics of the best epoch, with that epoch (counted from 1) and the epochs run."""
        for epoch, loss in enumerate(logs.get("loss", [])):
            if not math.isfinite(loss):
                raise kt.errors.FailedTrialError(
                    f"the loss became NaN in epoch {initial_epoch + epoch + 1} with "
                    f"{format_values(hp.values)}; lower the learning rate range"
                )
        scores = logs[OBJECTIVE.name]
        best = max(range(len(scores)), key=scores.__getitem__)
        return {**{key: float(values[best]) for key, values in logs.items()},
                "best_epoch": initial_epoch + best + 1, "epochs_trained": len(scores)}


def out_of_memory(error: Exception) -> bool:
    """Whether a fit failed for lack of memory: TensorFlow's error, or XLA's on JAX."""
    if isinstance(error, tf.errors.ResourceExhaustedError):
        return True
    # On JAX, XLA reports it as a JaxRuntimeError (a RuntimeError) starting RESOURCE_EXHAUSTED.
    return isinstance(error, RuntimeError) and "RESOURCE_EXHAUSTED" in str(error)
