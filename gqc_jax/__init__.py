"""gqc_jax: Gradient Quality Control for JAX and Optax.

Optimizer-side components that improve the gradient before the optimizer sees
it: controllers that draw more microbatches adaptively (accumulate until a
quality criterion passes, then step) and gradient rounding.
"""

from gqc_jax._hyperparams import ScalarOrSchedule
from gqc_jax.accumulation import (
    AdaptiveAccumulationState,
    Criterion,
    Draw,
    adaptive_accumulation,
    current_mean,
)
from gqc_jax.gnr import GradientNormRescale, GradientNormRescaleState, gnr
from gqc_jax.gns import GradientNoiseScale, GradientNoiseScaleState, gns
from gqc_jax.gnts import GradientNormThreshold, GradientNormThresholdState, gnts
from gqc_jax.mht import MetricHypothesisTest, MetricHypothesisTestState, mht
from gqc_jax.microstep import microstep
from gqc_jax.sbc import ScheduledBatch, ScheduledBatchState, sbc
from gqc_jax.stats import find_controller_state, stats

__version__ = "0.1.0"

__all__ = [
    "AdaptiveAccumulationState",
    "Criterion",
    "Draw",
    "GradientNoiseScale",
    "GradientNoiseScaleState",
    "GradientNormRescale",
    "GradientNormRescaleState",
    "GradientNormThreshold",
    "GradientNormThresholdState",
    "MetricHypothesisTest",
    "MetricHypothesisTestState",
    "ScalarOrSchedule",
    "ScheduledBatch",
    "ScheduledBatchState",
    "adaptive_accumulation",
    "current_mean",
    "find_controller_state",
    "gnr",
    "gns",
    "gnts",
    "mht",
    "microstep",
    "sbc",
    "stats",
]
