"""gqc_jax: Gradient Quality Control for JAX and Optax.

Optimizer-side components that improve the gradient before the optimizer sees
it: controllers that draw more microbatches adaptively (accumulate until a
quality criterion passes, then step) and gradient rounding.
"""

from gqc_jax import schedules
from gqc_jax._accumulation import (
    AdaptiveAccumulationState,
    Controller,
    Criterion,
    Draw,
    adaptive_accumulation,
    current_mean,
)
from gqc_jax._batch_schedules import batch_size_warmup, seesaw
from gqc_jax._clock import MicrobatchClock, MicrobatchClockState, on_microbatch_clock
from gqc_jax._factories import (
    gnr_with_cosine_annealing,
    gnr_with_cosine_annealing_conventional_lr,
    gns_default,
    gns_with_cosine_annealing,
    gnts_with_cosine_annealing,
    gnts_with_cosine_annealing_conventional_lr,
    mht_with_warmup,
    sbc_with_polynomial,
    sbc_with_polynomial_conventional_lr,
)
from gqc_jax._flush import flush
from gqc_jax._gnr import GradientNormRescale, GradientNormRescaleState, gnr
from gqc_jax._gns import GradientNoiseScale, GradientNoiseScaleState, gns
from gqc_jax._gnts import (
    GradientNormThreshold,
    GradientNormThresholdState,
    RelativeGradientNormThreshold,
    RelativeGradientNormThresholdState,
    gnts,
)
from gqc_jax._hyperparams import ScalarOrSchedule
from gqc_jax._loss_spikes import SkipLossSpikesState, loss_spike_stats, skip_loss_spikes
from gqc_jax._mht import MetricHypothesisTest, MetricHypothesisTestState, mht
from gqc_jax._microstep import microstep
from gqc_jax._sbc import ScheduledBatch, ScheduledBatchState, sbc
from gqc_jax._snr import SignalToNoise, SignalToNoiseState, gradient_noise_estimates, snr
from gqc_jax._stats import find_controller_state, stats
from gqc_jax._window import accumulate_window
from gqc_jax.rounding import RoundGradientsState, round_gradients

__version__ = "0.1.0"

__all__ = [
    "AdaptiveAccumulationState",
    "Controller",
    "Criterion",
    "Draw",
    "GradientNoiseScale",
    "GradientNoiseScaleState",
    "GradientNormRescale",
    "GradientNormRescaleState",
    "GradientNormThreshold",
    "GradientNormThresholdState",
    "MicrobatchClock",
    "MicrobatchClockState",
    "MetricHypothesisTest",
    "MetricHypothesisTestState",
    "RelativeGradientNormThreshold",
    "RelativeGradientNormThresholdState",
    "RoundGradientsState",
    "ScalarOrSchedule",
    "ScheduledBatch",
    "SignalToNoise",
    "SignalToNoiseState",
    "SkipLossSpikesState",
    "ScheduledBatchState",
    "accumulate_window",
    "adaptive_accumulation",
    "batch_size_warmup",
    "current_mean",
    "find_controller_state",
    "gradient_noise_estimates",
    "flush",
    "gnr",
    "gnr_with_cosine_annealing",
    "gnr_with_cosine_annealing_conventional_lr",
    "gns",
    "gns_default",
    "gns_with_cosine_annealing",
    "loss_spike_stats",
    "gnts",
    "gnts_with_cosine_annealing",
    "gnts_with_cosine_annealing_conventional_lr",
    "mht",
    "mht_with_warmup",
    "on_microbatch_clock",
    "microstep",
    "round_gradients",
    "sbc",
    "sbc_with_polynomial",
    "sbc_with_polynomial_conventional_lr",
    "schedules",
    "seesaw",
    "skip_loss_spikes",
    "snr",
    "stats",
]
