"""The training program: a GPT on a text data set, AdamW with or without a GQC controller.

Run ``python -m experiments.train --help`` for every
option. One call of the jitted, sharded train step consumes one microbatch; the
controller decides when the optimizer steps. Metrics are fetched one microbatch
late so the host never stalls the device, except at evaluations and checkpoints.

Outputs in ``--train.out_dir``: ``config.json``, ``metrics.jsonl``, TensorBoard
files under ``tb/``, orbax checkpoints under ``checkpoints/`` and
``summary.json``. ``--train.resume`` continues from the latest checkpoint
bit-identically (parameters, optimizer and controller state, data position and
dropout stream are all in it). Ctrl-C saves a checkpoint before it exits (130);
SIGTERM, a preemption notice, saves one at the next microbatch boundary, on
every process at the same microbatch, and exits 0. A run stopped either way has
no ``summary.json`` until it is resumed to its end. ``--train.branch_from=DIR``
starts a new run from a checkpoint of the run in DIR (``--train.branch_step``,
default its newest) under new optimizer or controller settings, e.g. a larger
window from a point of a small-batch run.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from experiments import distributed
from experiments.checkpoints import (
    BRANCH_MUST_MATCH,
    CheckpointError,
    Checkpoints,
    config_differences,
)
from experiments.config import Config, parse_args
from experiments.data import DataError, TokenData, TokenSource
from experiments.noise_scale import make_noise_probe, noise_scale
from experiments.optimizer import build_optimizer, learning_rate, with_own_hyperparameters
from experiments.run_log import RunLog, plain, read_record, threshold_key
from experiments.train_step import (
    OneStepLate,
    PackedMetrics,
    init_state,
    make_eval_step,
    make_flush_step,
    make_train_step,
)
from models.gpt import GPT, GPTConfig, count_params, preset
from models.sharding import batch_sharding, make_mesh

SUMMARY_FILE = "summary.json"
# Settings of one session of a run, not of the run: a finished or stopped run is
# read back or continued whatever they are now.
SESSION_SETTINGS = frozenset(
    f"train.{key}"
    for key in (
        "out_dir",
        "resume",
        "resume_step",
        "stop_after",
        "checkpoint_every",
        "keep_checkpoints",
        "progress",
        "tensorboard",
        "coordinator",
        "num_processes",
        "process_id",
        "peer_timeout_s",
        "time_limit_s",
    )
) | {"data.data_dir"}


def model_config(config: Config, vocab_size: int) -> GPTConfig:
    m = config.model
    overrides = {
        k: getattr(m, k)
        for k in ("depth", "width", "heads", "seq_len", "mlp_ratio")
        if getattr(m, k) is not None
    }
    if m.attention:
        overrides["attention"] = m.attention
    return preset(
        m.preset, vocab_size=vocab_size, dropout=m.dropout, dtype=jnp.dtype(m.dtype), **overrides
    )


def _check_mesh(config: Config, mesh) -> None:
    split = mesh.shape["data"] * mesh.shape["fsdp"]
    size = config.data.microbatch_size
    if size % split:
        raise ValueError(
            f"data.microbatch_size ({size}) must be divisible by the mesh's data x fsdp size "
            f"({split}, mesh {config.train.mesh!r}): each device holds whole sequences."
        )


def microbatches_in_budget(tokens: int, tokens_per_microbatch: int) -> int:
    """Whole microbatches in ``train.tokens``; a remainder is stated, not hidden."""
    total = tokens // tokens_per_microbatch
    if total < 1:
        raise ValueError(
            f"train.tokens ({tokens}) is less than one microbatch of {tokens_per_microbatch} "
            "tokens (data.microbatch_size x model.seq_len)."
        )
    if tokens % tokens_per_microbatch and jax.process_index() == 0:
        print(
            f"note: train.tokens={tokens} is {tokens / tokens_per_microbatch:.2f} microbatches "
            f"of {tokens_per_microbatch} tokens; training {total} microbatches "
            f"({total * tokens_per_microbatch} tokens).",
            file=sys.stderr,
        )
    return total


class NonFiniteStormError(RuntimeError):
    """Too many non-finite microbatches in a row: the run cannot recover by itself."""


class Trainer:
    """One run: set-up from a ``Config`` (and optionally token arrays in memory,
    ``source``, instead of ``data.dataset``), then :meth:`fit`."""

    def __init__(self, config: Config, source: TokenSource | None = None):
        self.config = config
        t = config.train
        self.out_dir = Path(t.out_dir)
        self.mesh = make_mesh(t.mesh)
        _check_mesh(config, self.mesh)
        self.rows = distributed.local_slice(config.data.microbatch_size)
        seq_len = config.model.seq_len or preset(config.model.preset).seq_len
        self.tokens_per_microbatch = config.data.microbatch_size * seq_len
        self.total = microbatches_in_budget(t.tokens, self.tokens_per_microbatch)
        # A warmup longer than the run fails here, early.
        self.lr_schedule = learning_rate(config, self.total)
        self.data = TokenData(config.data, seq_len, source)
        self.model_config = model_config(config, self.data.vocab_size)
        model = GPT(self.model_config, rngs=nnx.Rngs(t.seed))
        self.num_params = count_params(model)
        self.tx = build_optimizer(config, self.total)
        self.graphdef, self.state, self.shardings = init_state(model, self.tx, self.mesh)
        adam_b1 = config.optim.b1 if config.optim.name == "adamw" else None
        self.step_fn = make_train_step(
            self.graphdef,
            self.tx,
            self.mesh,
            self.shardings,
            dropout_seed=t.seed,
            adam_b1=adam_b1,
            lr_schedule=self.lr_schedule,
        )
        self.eval_fn = make_eval_step(self.graphdef, self.mesh, self.shardings)
        self.flush_fn = (
            make_flush_step(
                self.tx, self.mesh, self.shardings, adam_b1=adam_b1, lr_schedule=self.lr_schedule
            )
            if config.gqc.controller != "none"
            else None
        )
        self.probe_fn = (
            make_noise_probe(self.graphdef, self.mesh, self.shardings.params)
            if t.noise_probe
            else None
        )
        self.checkpoints = Checkpoints(self.out_dir / "checkpoints", t.keep_checkpoints)
        self.host: dict[str, Any] = {
            "steps": 0,
            "flushed_draws": 0,
            "elapsed": 0.0,
            "window_loss": [],
            "window_grad_norm": [],
        }
        self.noise: dict[str, list[float]] = {"microbatch": [], "signal": [], "noise": []}
        self.last_eval: dict[str, float] = {}
        self.saved_at = -1
        self.branched_at: int | None = None
        self.last_record: dict[str, Any] | None = None
        self._shown = -math.inf  # when the progress bar was last redrawn

    # Placement of host batches on the mesh (each process gives its own rows).
    def _batch(self, tokens: np.ndarray) -> jax.Array:
        return distributed.global_batch(tokens, self.mesh)

    def _probe_batches(self) -> jax.Array:
        k, size = self.config.train.noise_probe, self.config.data.microbatch_size
        # A stream of its own (another seed), fixed for the whole run.
        probe = dataclasses.replace(self.data.train, seed=self.config.data.seed + 1_000_003)
        width = self.rows.stop - self.rows.start
        local = np.stack([probe.rows(i * size + self.rows.start, width) for i in range(k)])
        spec = jax.sharding.PartitionSpec(None, *batch_sharding(self.mesh).spec)
        sharding = jax.sharding.NamedSharding(self.mesh, spec)
        return jax.make_array_from_process_local_data(sharding, local)

    def _resume(self) -> int:
        t = self.config.train
        if not t.resume:
            if self.checkpoints.steps():
                raise CheckpointError(
                    f"{str(self.out_dir)!r} already holds checkpoints {self.checkpoints.steps()}; "
                    "pass --train.resume to continue that run, or choose a new --train.out_dir."
                )
            return self._branch() if t.branch_from else 0
        self.state, run = self.checkpoints.restore(
            t.resume_step, self.state, self.shardings, self.config.to_dict()
        )
        self.host = run["host"]
        self.noise = run["noise"]
        self.saved_at = int(run["microbatch"])
        # Checkpoints after this one belong to the run being replaced (one may be
        # the corrupted checkpoint that made the user pick an older step).
        self.checkpoints.drop_after(self.saved_at)
        return self.saved_at

    def _branch(self) -> int:
        """Starts from another run's checkpoint (``train.branch_from``): its state and
        data position under this run's settings. The other run is only read."""
        t = self.config.train
        directory = Path(t.branch_from) / "checkpoints"
        if not directory.is_dir():
            raise CheckpointError(
                f"train.branch_from={t.branch_from!r}: no checkpoints folder in that run "
                f"({str(directory)!r} does not exist)."
            )
        parent = Checkpoints(directory, keep=1, read_only=True)
        fresh = self.state
        try:
            state, run = parent.restore(
                t.branch_step,
                self.state,
                self.shardings,
                self.config.to_dict(),
                must_match=BRANCH_MUST_MATCH,
            )
        finally:
            parent.close()
        opt_state = with_own_hyperparameters(
            state.opt_state,
            fresh.opt_state,
            Config.from_dict(run["config"]),
            self.config,
            self.total,
        )
        self.state = state._replace(opt_state=opt_state)
        # The optimizer steps so far carry over; the clock counts this run alone.
        self.host = {**run["host"], "elapsed": 0.0}
        self.noise = run["noise"]
        self.branched_at = int(run["microbatch"])
        return self.branched_at

    def _save(self, microbatch: int) -> None:
        if microbatch == self.saved_at:
            return  # already saved (e.g. Ctrl-C right after a checkpoint)
        # The time of every session so far, this one up to now: a resumed run's
        # elapsed_s counts all of them.
        elapsed = self.host["elapsed"] + time.perf_counter() - self.t_start
        run = {
            "microbatch": microbatch,
            "config": self.config.to_dict(),
            "host": {**self.host, "elapsed": elapsed},
            "noise": self.noise,
        }
        self.checkpoints.save(microbatch, self.state, run)
        self.saved_at = microbatch

    def _evaluate(self, microbatch: int) -> dict[str, float]:
        losses = [self.eval_fn(self.state.params, b) for b in self.eval_batches]
        loss = float(np.mean(jax.device_get(losses)))
        record = {
            "microbatch": microbatch,
            "tokens": microbatch * self.tokens_per_microbatch,
            "step": self.host["steps"],
            "eval/loss": loss,
            "eval/ppl": math.exp(min(loss, 50.0)),
        }
        if self.second_batches:
            second = [self.eval_fn(self.state.params, b) for b in self.second_batches]
            record["eval2/loss"] = float(np.mean(jax.device_get(second)))
        if self.probe_fn is not None:
            measured = jax.device_get(self.probe_fn(self.state.params, self.probe_batches))
            strength, noise = float(measured["signal"]), float(measured["noise"])
            self.noise["microbatch"].append(microbatch)
            self.noise["signal"].append(strength)
            self.noise["noise"].append(noise)
            record.update(
                {
                    "eval/grad_signal": strength,
                    "eval/grad_noise": noise,
                    "eval/noise_scale": noise / strength if strength > 0 else float("nan"),
                }
            )
        self.log.write(record)
        self.last_eval = record
        return record

    def _on_metrics(self, microbatch: int, metrics: dict[str, Any]) -> None:
        """Host bookkeeping of microbatch ``microbatch`` (1-based count after it)."""
        if isinstance(metrics, PackedMetrics):  # Python numbers: cheap to log
            metrics = metrics.scalars()
        h = self.host
        loss, grad_norm = float(metrics["loss"]), float(metrics["grad_norm"])
        if math.isfinite(loss) and math.isfinite(grad_norm):
            h["storm_start"] = None
        else:
            h["storm_start"] = h.get("storm_start") or microbatch
            self._check_storm(microbatch)
        if bool(metrics.get("loss_spike", False)):  # skipped by the spike guard
            h["loss_spikes"] = int(metrics["num_loss_spikes"])
            self.log.write(
                {
                    "microbatch": microbatch,
                    "step": h["steps"],
                    "train/spike_loss": loss,
                    "train/loss_spikes": h["loss_spikes"],
                }
            )
            return
        h["window_loss"].append(loss)
        h["window_grad_norm"].append(grad_norm)
        if bool(metrics["stepped"]):
            self._on_step(microbatch, metrics)

    def _check_storm(self, microbatch: int) -> None:
        """Stops the run after ``train.max_consecutive_skipped`` non-finite
        microbatches in a row, naming the newest checkpoint saved before them."""
        bound, start = self.config.train.max_consecutive_skipped, self.host["storm_start"]
        if not bound or microbatch - start + 1 < bound:
            return
        before = [s for s in self.checkpoints.steps() if s < start]
        where = (
            f"the newest checkpoint from before them is {before[-1]} "
            f"(--train.resume --train.resume_step={before[-1]})"
            if before
            else "no checkpoint was saved before them"
        )
        raise NonFiniteStormError(
            f"{microbatch - start + 1} consecutive microbatches ({start} to {microbatch}) had a "
            f"non-finite loss or gradient (train.max_consecutive_skipped={bound}); stopping: "
            f"{where}. Lower the learning rate, or look for bad data at these microbatches."
        )

    def _flush(self, microbatch: int) -> None:
        """At the end of the run: the controller steps on its open window, so the
        last microbatches are trained on, not dropped."""
        if self.flush_fn is None or not self.host["window_loss"]:
            return
        self.state, stats = self.flush_fn(self.state)
        stats = jax.device_get(stats)
        if not stats["stepped"]:  # every microbatch of the window was skipped
            return
        self.host["flushed_draws"] = int(stats["last_num_draws"])
        self._on_step(microbatch, {**stats, "flushed": True})

    def _on_step(self, microbatch: int, metrics: dict[str, Any]) -> None:
        """Logs the optimizer step that ended at microbatch ``microbatch``."""
        h = self.host
        h["steps"] += 1
        now = time.perf_counter()
        elapsed = h["elapsed"] + now - self.t_start
        tokens = microbatch * self.tokens_per_microbatch
        record = {
            "microbatch": microbatch,
            "tokens": tokens,
            "step": h["steps"],
            "train/loss": float(np.mean(h["window_loss"])),
            "train/grad_norm_microbatch": float(np.mean(h["window_grad_norm"])),
            "gqc/draws": len(h["window_loss"]),
            "train/batch_sequences": len(h["window_loss"]) * self.config.data.microbatch_size,
            "perf/elapsed_s": elapsed,
            "perf/tokens_per_s": (tokens - self.start_tokens) / max(now - self.t_start, 1e-9),
        }
        record.update(
            {
                k if "/" in k else f"gqc/{k}": v  # weights/, diag/ keep their namespace
                for k, v in metrics.items()
                if k not in ("loss", "grad_norm", "stepped", "num_draws")
            }
        )
        # How much of the microbatch gradients cancels in the window mean (1 for a
        # window of one).
        window_norm = (
            metrics["last_grad_norm"] if "last_grad_norm" in metrics else metrics["grad_norm"]
        )
        record["diag/mean_over_microbatch_norm"] = float(window_norm) / max(
            record["train/grad_norm_microbatch"], 1e-30
        )
        self.log.write(record)
        h["window_loss"], h["window_grad_norm"] = [], []
        self.last_record = record

    def _progress(self, done: int) -> None:
        """The progress bar, redrawn at most 5 times a second (a redraw per
        microbatch cost 5-10% of the tiny model's tokens/s) and at the end."""
        r, now = self.last_record, time.perf_counter()
        last = done == self.total
        if r is None or not self.config.train.progress or (now - self._shown < 0.2 and not last):
            return
        self._shown = now
        key = threshold_key([r], self.config.gqc.controller)
        threshold = r[key] if key else None
        postfix = {
            "loss": f"{r['train/loss']:.3f}",
            "tok/s": f"{r['perf/tokens_per_s']:.0f}",
            "draws/step": f"{r['microbatch'] / max(self.host['steps'], 1):.2f}",
        }
        if threshold is not None:
            postfix["threshold"] = f"{threshold:.3g}"
        if "eval/loss" in self.last_eval:
            postfix["val"] = f"{self.last_eval['eval/loss']:.3f}"
        self.log.progress(done, postfix)

    def fit(self) -> dict[str, Any]:
        """Trains to the token budget (or ``train.stop_after`` microbatches) and
        returns the summary (also written to ``summary.json``)."""
        t = self.config.train
        start = self._resume()
        if start >= self.total:
            return self._already_complete(start)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        primary = jax.process_index() == 0
        if primary:
            (self.out_dir / "config.json").write_text(json.dumps(self.config.to_dict(), indent=2))
        self.log = RunLog(
            self.out_dir,
            self.total,
            start=start,
            progress=t.progress,
            tensorboard=t.tensorboard,
            resume_from=start if t.resume else None,
            enabled=primary,
        )
        self.eval_batches = [self._batch(b) for b in self.data.eval_batches(self.rows)]
        self.second_batches = (
            [self._batch(b) for b in self.data.eval_batches(self.rows, second=True)]
            if self.data.second is not None
            else []
        )
        self.probe_batches = self._probe_batches() if self.probe_fn is not None else None
        stop = self.total if t.stop_after is None else min(self.total, start + t.stop_after)
        self.start_tokens = start * self.tokens_per_microbatch
        self.t_start = time.perf_counter()
        next_checkpoint = (self.host["steps"] // t.checkpoint_every + 1) * t.checkpoint_every
        late = OneStepLate(self._on_metrics)  # (microbatch, metrics) of the last step
        done = start
        interrupted = preempted = timed_out = False
        # Ctrl-C and SIGTERM set a flag that the loop checks between microbatches,
        # so a signal never lands inside library code that might swallow it (a
        # checkpoint being written); a second Ctrl-C interrupts at once. SIGTERM
        # (a preemption notice) saves at the next microbatch boundary and exits
        # 0. On several processes JAX's preemption service catches SIGTERM and
        # every process stops at the same microbatch.
        requested: list[int] = []
        several = jax.process_count() > 1

        def on_signal(signum, frame):
            if requested and signum == signal.SIGINT:
                raise KeyboardInterrupt
            requested.append(signum)

        handled = [signal.SIGINT] + ([] if several else [signal.SIGTERM])
        main_thread = threading.current_thread() is threading.main_thread()
        previous = {sig: signal.signal(sig, on_signal) for sig in handled} if main_thread else {}
        # The objects built so far (the model, the compiled steps, jax's caches)
        # live as long as the run: frozen, the collector no longer rescans them.
        # Its full passes over them took about 3% of the tiny model's step time.
        gc.collect()
        gc.freeze()
        try:
            if start == 0 or start == self.branched_at:
                self._evaluate(start)
            for i in range(start, stop):
                if signal.SIGINT in requested:
                    raise KeyboardInterrupt
                if signal.SIGTERM in requested or (
                    several and multihost_utils.reached_preemption_sync_point(i)
                ):
                    preempted = True
                    break
                tokens = self._batch(self.data.microbatch(i, self.rows))
                self.state, metrics = self.step_fn(self.state, tokens)
                late.push(i + 1, metrics)
                done = i + 1
                if t.time_limit_s and time.perf_counter() - self.t_start >= t.time_limit_s:
                    stop = done  # this session's time is up: evaluate, save, end here
                    timed_out = True
                eval_due = done % t.eval_every == 0 or done == self.total or timed_out
                if eval_due or self.host["steps"] >= next_checkpoint or done == stop:
                    late.drain()
                    if done == self.total:
                        self._flush(done)
                    if eval_due:
                        self._evaluate(done)
                    if self.host["steps"] >= next_checkpoint or done == stop:
                        self._save(done)
                        next_checkpoint = (
                            self.host["steps"] // t.checkpoint_every + 1
                        ) * t.checkpoint_every
                self._progress(done)
                if done == stop:
                    break
            if preempted:
                late.drain()
                self._save(done)
        except KeyboardInterrupt:
            interrupted = True
            late.drain()
            self._save(done)
        finally:
            gc.unfreeze()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.session_s = time.perf_counter() - self.t_start
            self.host["elapsed"] += self.session_s
            self.log.close()
        summary = self.summary(done)
        if timed_out:  # train.time_limit_s ended this session before train.tokens
            summary["time_limited"] = True
        # summary.json marks a run that ended (train_once skips such a run); one
        # stopped by a signal or its time limit has only its checkpoint and
        # metrics so far.
        if primary and not (interrupted or preempted or timed_out):
            (self.out_dir / SUMMARY_FILE).write_text(json.dumps(plain(summary), indent=2))
        self.checkpoints.close()
        if interrupted or preempted:
            print(
                f"\n{'preempted (SIGTERM)' if preempted else 'interrupted'}: checkpoint saved "
                f"at microbatch {done} in {self.out_dir / 'checkpoints'}; continue with "
                "--train.resume",
                file=sys.stderr,
            )
        if interrupted:
            raise KeyboardInterrupt
        return {**summary, "preempted": preempted} if preempted else summary

    def _already_complete(self, done: int) -> dict[str, Any]:
        """``--train.resume`` of a finished run: nothing to train, nothing rewritten."""
        self.checkpoints.close()
        path = self.out_dir / SUMMARY_FILE
        print(
            f"run complete: {str(self.out_dir)!r} finished its {self.total} microbatches "
            f"(checkpoint {done}); its summary is {str(path)!r}.",
            file=sys.stderr,
        )
        if path.is_file():
            return read_record(path.read_text())
        self.session_s, self.start_tokens = 0.0, done * self.tokens_per_microbatch
        return self.summary(done)

    def summary(self, done: int) -> dict[str, Any]:
        steps = self.host["steps"]
        # Over the second half of the run: B_noise grows as training proceeds, and
        # the large gradients of the first evaluations would dominate a run-wide mean.
        late = [i for i, m in enumerate(self.noise["microbatch"]) if 2 * m >= self.total]
        measured = noise_scale(
            [self.noise["signal"][i] for i in late], [self.noise["noise"][i] for i in late]
        )
        return {
            "out_dir": str(self.out_dir),
            "controller": self.config.gqc.controller,
            "params": self.num_params,
            "microbatches": done,
            "tokens": done * self.tokens_per_microbatch,
            "steps": steps,
            "draws_per_step": done / steps if steps else float("nan"),
            # The last window, stepped on by gqc_jax.flush at the end (0: none open).
            "flushed_draws": self.host.get("flushed_draws", 0),
            # Microbatches skipped by the loss-spike guard (train.spike_sigmas).
            "loss_spikes": self.host.get("loss_spikes", 0),
            "eval_loss": self.last_eval.get("eval/loss", float("nan")),
            "eval_ppl": self.last_eval.get("eval/ppl", float("nan")),
            "noise_scale_microbatches": measured,
            "noise_scale_sequences": measured * self.config.data.microbatch_size,
            "elapsed_s": self.host["elapsed"],
            "tokens_per_s": (done * self.tokens_per_microbatch - self.start_tokens)
            / max(self.session_s, 1e-9),
        }


def train(config: Config, source: TokenSource | None = None) -> dict[str, Any]:
    """Runs one training job (on ``source``'s tokens when given) and returns its summary."""
    return Trainer(config, source).fit()


class PreemptedError(RuntimeError):
    """A run of :func:`train_once` got SIGTERM: its checkpoint is saved, and the
    next ``train_once`` of the same configuration continues from it."""


def train_once(config: Config) -> dict[str, Any]:
    """A finished run's summary: read back when ``train.out_dir`` holds one (a
    study rerun skips its finished runs), otherwise trained now; a run stopped
    with a checkpoint (Ctrl-C, SIGTERM) continues from it.

    Raises:
      ValueError: ``train.out_dir`` holds a run made with other settings.
      PreemptedError: SIGTERM stopped the run (a study must stop too).
    """
    out = Path(config.train.out_dir)
    path = out / SUMMARY_FILE
    stopped = not path.is_file() and bool(_checkpoint_steps(out))
    if (path.is_file() or stopped) and (out / "config.json").is_file():
        changed = config_differences(
            _branch_resolved(json.loads((out / "config.json").read_text())),
            _branch_resolved(config.to_dict()),
            must_match=None,
            exclude=SESSION_SETTINGS,
            ignore_absent=True,
        )
        if changed:
            raise ValueError(
                f"{str(out)!r} holds a run made with other settings ({'; '.join(changed)}); "
                "remove it or choose another train.out_dir."
            )
    if path.is_file():
        return read_record(path.read_text())
    if stopped:
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, resume=True))
    print(f"-> {config.train.out_dir}", file=sys.stderr, flush=True)
    summary = train(config)
    if summary.get("preempted"):
        raise PreemptedError(
            f"{str(out)!r}: preempted (SIGTERM) at microbatch {summary['microbatches']}, "
            "checkpoint saved; run the same command again to continue from it."
        )
    return summary


def _branch_resolved(sections: dict[str, Any]) -> dict[str, Any]:
    """``sections`` with ``train.branch_from`` as a resolved path: the run folder
    branched from is the same setting whether named relative or absolute."""
    branch = sections.get("train", {}).get("branch_from")
    if not branch:
        return sections
    return {**sections, "train": {**sections["train"], "branch_from": str(Path(branch).resolve())}}


def _checkpoint_steps(out: Path) -> list[int]:
    directory = out / "checkpoints"
    if not directory.is_dir():
        return []
    checkpoints = Checkpoints(directory, keep=1, read_only=True)
    try:
        return checkpoints.steps()
    finally:
        checkpoints.close()


def _peer_failed(error: Exception) -> None:
    """Exits at once after a failed cross-process operation: another process has
    died or stopped answering. A normal exit would wait for the others in JAX's
    shutdown barrier until ``train.peer_timeout_s`` and then abort."""
    first = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
    print(
        f"error: process {jax.process_index()} of {jax.process_count()}: an operation across "
        f"processes failed ({type(error).__name__}: {first}); another process has most likely "
        "died. Stopping without waiting for it; resume every process with --train.resume.",
        file=sys.stderr,
        flush=True,
    )
    sys.stdout.flush()
    os._exit(3)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        config = parse_args(argv, prog="python -m experiments.train")
    except (ValueError, FileNotFoundError) as e:  # a config file's
        print(f"error: {e}", file=sys.stderr)
        return 2
    except SystemExit as stop:  # --help, or a bad option (the parser printed why)
        return int(stop.code or 0)
    t = config.train
    if t.num_processes > 1:
        distributed.initialize(
            t.coordinator, t.num_processes, t.process_id, peer_timeout_s=t.peer_timeout_s
        )
    else:  # a cluster JAX detects by itself, else nothing
        distributed.initialize(peer_timeout_s=t.peer_timeout_s)
    try:
        summary = train(config)
    except (ValueError, DataError, CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NonFiniteStormError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130
    except jax.errors.JaxRuntimeError as e:
        if jax.process_count() == 1:
            raise
        _peer_failed(e)
    print(json.dumps(plain(summary), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
