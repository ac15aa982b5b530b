"""The training program's controllers, each described once: its own typed
``gqc.`` options (a small frozen dataclass that checks its values), the
statistics its run log shows as its threshold, and the one function that builds
the library object from those options.

The command line (``--gqc.controller``, the ``--gqc.`` options and ``--help``),
the configuration's checks (:class:`experiments.config.Config`), the optimizer
(:func:`experiments.optimizer.build_optimizer`), the run log's threshold
(:func:`experiments.run_log.threshold_key`) and the tests derive from
``CONTROLLERS``. A new controller is its library module plus one entry here
(docs/training.md shows one as a runnable example). The options stay flat on
the command line and in a run's ``config.json`` (``--gqc.tolerance``, not
``--gqc.gns.tolerance``), so runs and pages keep their keys; two controllers
may share an option of the same type and default.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

import jax.numpy as jnp
import optax

import gqc_jax

if TYPE_CHECKING:
    from experiments.config import Config

OptionsT = TypeVar("OptionsT")  # a controller's options (a frozen dataclass)

# build(options, config, inner, total microbatches, learning-rate schedule) -> transformation
Build = Callable[[OptionsT, "Config", optax.GradientTransformation, int, optax.Schedule], Any]


def option(default: Any, help: str) -> Any:
    """A controller option: its default and the one line ``--help`` shows."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class Controller(Generic[OptionsT]):
    """One controller of the training program.

    Attributes:
      options: its own ``gqc.`` options, a frozen dataclass whose docstring
        says what the controller does, whose fields are made with
        :func:`option` and whose ``__post_init__`` checks their values
        (``max_draws`` and the learning-rate coupling are shared by every
        accumulating controller and live in the configuration).
      statistics: the ``gqc_jax.stats`` keys the run log shows as its
        threshold, the first one present winning.
      build: the library object around ``inner`` (the optimizer on the
        microbatch clock), from the options and the whole configuration.
      accumulates: False for a controller that steps on every microbatch (no
        window, so no learning-rate coupling or token time).
    """

    options: type[OptionsT]
    statistics: tuple[str, ...]
    build: Build[OptionsT]
    accumulates: bool = True

    @property
    def fields(self) -> tuple[str, ...]:
        """The names of its ``gqc.`` options."""
        return tuple(f.name for f in dataclasses.fields(self.options))  # type: ignore[arg-type]

    def read(self, gqc: Any) -> OptionsT:
        """Its options from the configuration's ``gqc`` section (checked)."""
        return self.options(**{name: getattr(gqc, name) for name in self.fields})


class Option(NamedTuple):
    """A ``gqc.`` option as the configuration holds it."""

    name: str
    kind: Any  # its type
    default: Any
    help: str
    owners: tuple[str, ...]  # the controllers that read it


def controller_options(entries: dict[str, Controller[Any]]) -> list[Option]:
    """Every controller option of ``entries``, in their order, each once.

    Raises:
      TypeError: two controllers declare one option with different types or defaults.
    """
    seen: dict[str, Option] = {}
    for name, entry in entries.items():
        hints = typing.get_type_hints(entry.options)
        for f in dataclasses.fields(entry.options):
            mine = Option(f.name, hints[f.name], f.default, f.metadata.get("help", ""), (name,))
            first = seen.setdefault(f.name, mine)
            if first is mine:
                continue
            if (first.kind, first.default) != (mine.kind, mine.default):
                raise TypeError(
                    f"gqc.{f.name}: {name} declares {mine.kind.__name__} = {mine.default!r}, "
                    f"{first.owners[0]} {first.kind.__name__} = {first.default!r}."
                )
            seen[f.name] = first._replace(owners=(*first.owners, name))
    return list(seen.values())


def coupling(config: Config) -> dict[str, Any]:
    """The learning-rate coupling and token time every accumulating controller takes."""
    from experiments.config import lr_scaling_power

    g = config.gqc
    return {
        "lr_scaling": lr_scaling_power(g.lr_scaling),
        "reference_draws": g.reference_draws,
        "token_time": g.token_time,
    }


@dataclasses.dataclass(frozen=True)
class GNTSOptions:
    """step when the window mean's gradient norm falls to threshold (absolute,
    or a fraction of the running single-microbatch norm when relative)."""

    threshold: float = option(0.5, "the gradient-norm threshold")
    relative: bool = option(False, "threshold as a fraction of the running single-microbatch norm")
    schedule: str = option(
        "constant",
        "'constant' or 'reference' (inverse warmup from threshold x warmup_multiplier, "
        "then a quarter cosine to final_threshold)",
    )
    final_threshold: float = option(0.25, "the reference schedule's final threshold")
    warmup_multiplier: float = option(10.0, "the reference schedule's start, x threshold")

    def __post_init__(self):
        if self.schedule not in ("constant", "reference"):
            raise ValueError(
                f"gqc.schedule must be 'constant' or 'reference', got {self.schedule!r}."
            )


def _gnts(o: GNTSOptions, config: Config, inner, total: int, lr) -> Any:
    threshold: Any = o.threshold
    if o.schedule == "reference":
        threshold = gqc_jax.schedules.cosine_annealing_with_inverse_warmup(
            o.threshold, o.final_threshold, config.optim.warmup, total, o.warmup_multiplier
        )
    return gqc_jax.gnts(
        inner, threshold, max_draws=config.gqc.max_draws, relative=o.relative, **coupling(config)
    )


@dataclasses.dataclass(frozen=True)
class SBCOptions:
    """a logical batch of sbc_draws microbatches, the reference's polynomial
    ramp from sbc_draws to sbc_final_draws, or windows taken in turn from
    sbc_cycle."""

    sbc_draws: int = option(4, "the logical batch, in microbatches")
    sbc_final_draws: int = option(
        0, "> 0: a ramp (power 2, after optim.warmup) from sbc_draws to this; 0 = constant"
    )
    sbc_cycle: str = option(
        "", "windows in microbatches, taken in turn (e.g. 1,4: 1, 4, 1, 4, ...); '' = off"
    )

    def __post_init__(self):
        if self.sbc_draws < 1:
            raise ValueError(f"gqc.sbc_draws must be >= 1, got {self.sbc_draws}.")
        if self.sbc_final_draws < 0:
            raise ValueError(
                f"gqc.sbc_final_draws must be >= 0 (0 = constant), got {self.sbc_final_draws}."
            )
        if self.sbc_cycle and self.sbc_final_draws:
            raise ValueError(
                f"gqc.sbc_cycle={self.sbc_cycle!r} and gqc.sbc_final_draws="
                f"{self.sbc_final_draws} are two schedules; set one."
            )
        sbc_cycle(self.sbc_cycle)


def sbc_cycle(text: str) -> tuple[int, ...]:
    """``gqc.sbc_cycle``: comma-separated windows >= 1 (empty: none)."""
    try:
        windows = tuple(int(v) for v in text.split(",")) if text else ()
    except ValueError:
        windows = (0,)
    if any(w < 1 for w in windows):
        raise ValueError(f"gqc.sbc_cycle must be comma-separated whole numbers >= 1, got {text!r}.")
    return windows


def _cycle(windows: tuple[int, ...], size: int) -> optax.Schedule:
    """The logical batch on the microbatch clock that makes the windows
    ``windows`` in turn: at count c, the window holding c mod their sum."""
    ends = jnp.cumsum(jnp.asarray(windows))
    batches = jnp.asarray(windows, jnp.float32) * size

    def logical(count):
        return batches[jnp.searchsorted(ends, count % ends[-1], side="right")]

    return logical


def _sbc(o: SBCOptions, config: Config, inner, total: int, lr) -> Any:
    size = config.data.microbatch_size
    logical: Any = o.sbc_draws * size
    windows = sbc_cycle(o.sbc_cycle)
    if o.sbc_final_draws:
        logical = gqc_jax.schedules.polynomial_schedule_with_warmup(
            logical, o.sbc_final_draws * size, config.optim.warmup, total
        )
    elif windows:
        logical = _cycle(windows, size)
    cap = max(config.gqc.max_draws, o.sbc_draws, o.sbc_final_draws, *windows)
    return gqc_jax.sbc(inner, logical, size, max_draws=cap, **coupling(config))


@dataclasses.dataclass(frozen=True)
class GNSOptions:
    """step when the gradient noise statistic falls to tolerance."""

    tolerance: float = option(1.0, "the noise tolerance (any value >= 1 steps every 2nd draw)")


@dataclasses.dataclass(frozen=True)
class GNROptions:
    """rescale every microbatch gradient to target_norm; a step per microbatch."""

    target_norm: float = option(1.0, "the norm each gradient is rescaled to")


@dataclasses.dataclass(frozen=True)
class MHTOptions:
    """step when a test at confidence says the mean loss is known to percent_error."""

    confidence: float = option(0.95, "the test's confidence level, in (0, 1)")
    percent_error: float = option(0.05, "the relative error of the mean loss allowed (> 0)")


@dataclasses.dataclass(frozen=True)
class SNROptions:
    """step when the gradient's noise is at most noise_ratio of its signal."""

    noise_ratio: float = option(0.1, "the noise-to-signal bound (> 0)")
    min_draws: int = option(2, "at least this many microbatches per step (>= 2)")


@dataclasses.dataclass(frozen=True)
class BatchWarmupOptions:
    """the window grows warmup_growth-fold at each of warmup_fractions."""

    warmup_fractions: str = option(
        "0.1,0.2,0.4", "comma-separated fractions of the run, strictly increasing"
    )
    warmup_growth: int = option(2, "the window's growth at each fraction (>= 2)")

    def __post_init__(self):
        warmup_fractions(self.warmup_fractions)
        if self.warmup_growth < 2:
            raise ValueError(f"gqc.warmup_growth must be >= 2, got {self.warmup_growth}.")


def warmup_fractions(text: str) -> tuple[float, ...]:
    """``gqc.warmup_fractions``: comma-separated fractions, checked by
    ``gqc_jax.batch_size_warmup``'s own rule."""
    try:
        fractions = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(
            f"gqc.warmup_fractions must be comma-separated numbers, got {text!r}."
        ) from None
    try:
        gqc_jax.batch_size_warmup(optax.identity(), 1, fractions, max_draws=2 ** len(fractions))
    except (TypeError, ValueError) as error:
        raise ValueError(f"gqc.warmup_fractions={text!r}: {error}") from None
    return fractions


def _batch_warmup(o: BatchWarmupOptions, config: Config, inner, total: int, lr) -> Any:
    fractions = warmup_fractions(o.warmup_fractions)
    return gqc_jax.batch_size_warmup(
        inner,
        total,
        fractions,
        growth=o.warmup_growth,
        # A fixed batch schedule: the square-root rule unless another is asked for.
        lr_scaling=coupling(config)["lr_scaling"] or "sqrt",
        max_draws=max(config.gqc.max_draws, o.warmup_growth ** len(fractions)),
        token_time=config.gqc.token_time,
    )


@dataclasses.dataclass(frozen=True)
class SeesawOptions:
    """the window doubles each time the learning-rate schedule halves after its warmup."""


def _seesaw(o: SeesawOptions, config: Config, inner, total: int, lr) -> Any:
    return gqc_jax.seesaw(
        inner,
        lr,
        config.optim.lr,
        warmup_microbatches=config.optim.warmup,
        lr_scaling=coupling(config)["lr_scaling"] or "sqrt",
        max_draws=config.gqc.max_draws,
        token_time=config.gqc.token_time,
    )


CONTROLLERS: dict[str, Controller[Any]] = {
    "gnts": Controller(
        GNTSOptions, statistics=("effective_threshold", "gradient_norm_threshold"), build=_gnts
    ),
    "sbc": Controller(SBCOptions, statistics=("logical_batch_size",), build=_sbc),
    "gns": Controller(
        GNSOptions,
        statistics=("noise_tolerance",),
        build=lambda o, c, inner, total, lr: gqc_jax.gns(
            inner, o.tolerance, max_draws=c.gqc.max_draws, **coupling(c)
        ),
    ),
    "gnr": Controller(
        GNROptions,
        statistics=("target_gradient_norm",),
        build=lambda o, c, inner, total, lr: gqc_jax.gnr(inner, o.target_norm),
        accumulates=False,
    ),
    "mht": Controller(
        MHTOptions,
        statistics=("percent_error_threshold",),
        build=lambda o, c, inner, total, lr: gqc_jax.mht(
            inner, o.confidence, o.percent_error, max_draws=c.gqc.max_draws, **coupling(c)
        ),
    ),
    "snr": Controller(
        SNROptions,
        statistics=("noise_ratio",),
        build=lambda o, c, inner, total, lr: gqc_jax.snr(
            inner, o.noise_ratio, min_draws=o.min_draws, max_draws=c.gqc.max_draws, **coupling(c)
        ),
    ),
    "batch_warmup": Controller(
        BatchWarmupOptions, statistics=("logical_batch_size",), build=_batch_warmup
    ),
    "seesaw": Controller(SeesawOptions, statistics=("logical_batch_size",), build=_seesaw),
}
