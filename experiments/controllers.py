"""The training program's controllers, each described once: the ``gqc.`` fields
it reads, the statistics its run log shows as its threshold, and the one
function that builds the library object from the configuration.

The command line (``--gqc.controller`` and ``--help``), the optimizer
(:func:`experiments.optimizer.build_optimizer`), the run log's threshold
(:func:`experiments.run_log.threshold_key`) and the tests derive from
``CONTROLLERS``. A new controller is its library module plus one entry here
(and its fields in ``GQCConfig`` when it has new ones)::

    "mine": Controller(
        fields=("threshold",),
        statistics=("my_threshold",),
        build=lambda c, inner, total, lr: gqc_jax.mine(
            inner, c.gqc.threshold, max_draws=c.gqc.max_draws, **coupling(c)
        ),
    ),
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import optax

import gqc_jax

if TYPE_CHECKING:
    from experiments.config import Config

# build(config, inner, total microbatches, learning-rate schedule) -> transformation
Build = Callable[["Config", optax.GradientTransformation, int, optax.Schedule], Any]


@dataclasses.dataclass(frozen=True)
class Controller:
    """One controller of the training program.

    Attributes:
      fields: its own ``gqc.`` fields (``max_draws`` and the learning-rate
        coupling are shared by every accumulating controller).
      statistics: the ``gqc_jax.stats`` keys the run log shows as its
        threshold, the first one present winning.
      build: the library object around ``inner`` (the optimizer on the
        microbatch clock).
      accumulates: False for a controller that steps on every microbatch (no
        window, so no learning-rate coupling or token time).
    """

    fields: tuple[str, ...]
    statistics: tuple[str, ...]
    build: Build
    accumulates: bool = True


def coupling(config: Config) -> dict[str, Any]:
    """The learning-rate coupling and token time every accumulating controller takes."""
    from experiments.config import lr_scaling_power

    g = config.gqc
    return {
        "lr_scaling": lr_scaling_power(g.lr_scaling),
        "reference_draws": g.reference_draws,
        "token_time": g.token_time,
    }


def _gnts(config: Config, inner, total: int, lr) -> Any:
    g, o = config.gqc, config.optim
    threshold: Any = g.threshold
    if g.schedule == "reference":
        threshold = gqc_jax.schedules.cosine_annealing_with_inverse_warmup(
            g.threshold, g.final_threshold, o.warmup, total, g.warmup_multiplier
        )
    return gqc_jax.gnts(
        inner, threshold, max_draws=g.max_draws, relative=g.relative, **coupling(config)
    )


def _sbc(config: Config, inner, total: int, lr) -> Any:
    g, size = config.gqc, config.data.microbatch_size
    logical: Any = g.sbc_draws * size
    if g.sbc_final_draws:
        logical = gqc_jax.schedules.polynomial_schedule_with_warmup(
            logical, g.sbc_final_draws * size, config.optim.warmup, total
        )
    cap = max(g.max_draws, g.sbc_draws, g.sbc_final_draws)
    return gqc_jax.sbc(inner, logical, size, max_draws=cap, **coupling(config))


def _batch_warmup(config: Config, inner, total: int, lr) -> Any:
    from experiments.config import warmup_fractions

    g = config.gqc
    fractions = warmup_fractions(g.warmup_fractions)
    return gqc_jax.batch_size_warmup(
        inner,
        total,
        fractions,
        growth=g.warmup_growth,
        # A fixed batch schedule: the square-root rule unless another is asked for.
        lr_scaling=coupling(config)["lr_scaling"] or "sqrt",
        max_draws=max(g.max_draws, g.warmup_growth ** len(fractions)),
        token_time=g.token_time,
    )


def _seesaw(config: Config, inner, total: int, lr) -> Any:
    g = config.gqc
    return gqc_jax.seesaw(
        inner,
        lr,
        config.optim.lr,
        warmup_microbatches=config.optim.warmup,
        lr_scaling=coupling(config)["lr_scaling"] or "sqrt",
        max_draws=g.max_draws,
        token_time=g.token_time,
    )


CONTROLLERS: dict[str, Controller] = {
    "gnts": Controller(
        fields=("threshold", "relative", "schedule", "final_threshold", "warmup_multiplier"),
        statistics=("effective_threshold", "gradient_norm_threshold"),
        build=_gnts,
    ),
    "sbc": Controller(
        fields=("sbc_draws", "sbc_final_draws"),
        statistics=("logical_batch_size",),
        build=_sbc,
    ),
    "gns": Controller(
        fields=("tolerance",),
        statistics=("noise_tolerance",),
        build=lambda c, inner, total, lr: gqc_jax.gns(
            inner, c.gqc.tolerance, max_draws=c.gqc.max_draws, **coupling(c)
        ),
    ),
    "gnr": Controller(
        fields=("target_norm",),
        statistics=("target_gradient_norm",),
        build=lambda c, inner, total, lr: gqc_jax.gnr(inner, c.gqc.target_norm),
        accumulates=False,
    ),
    "mht": Controller(
        fields=("confidence", "percent_error"),
        statistics=("percent_error_threshold",),
        build=lambda c, inner, total, lr: gqc_jax.mht(
            inner, c.gqc.confidence, c.gqc.percent_error, max_draws=c.gqc.max_draws, **coupling(c)
        ),
    ),
    "snr": Controller(
        fields=("noise_ratio", "min_draws"),
        statistics=("noise_ratio",),
        build=lambda c, inner, total, lr: gqc_jax.snr(
            inner,
            c.gqc.noise_ratio,
            min_draws=c.gqc.min_draws,
            max_draws=c.gqc.max_draws,
            **coupling(c),
        ),
    ),
    "batch_warmup": Controller(
        fields=("warmup_fractions", "warmup_growth"),
        statistics=("logical_batch_size",),
        build=_batch_warmup,
    ),
    "seesaw": Controller(fields=(), statistics=("logical_batch_size",), build=_seesaw),
}
