"""A GPT-2-style decoder in Flax NNX, with named presets for scaling sweeps."""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    """Model shape and numerics.

    Attributes:
      vocab_size: tokens in the vocabulary (256 for the byte tokenizer).
      seq_len: maximum sequence length (learned positional embeddings).
      depth: number of transformer blocks.
      width: residual width.
      heads: attention heads (``width`` must be divisible by it).
      mlp_ratio: hidden width of the MLP over ``width``.
      dropout: dropout rate on the attention and MLP outputs and the embeddings,
        active only when a ``dropout_key`` is passed (training).
      tied_embeddings: reuse the token embedding as the output projection.
      norm: ``"layernorm"`` or ``"rmsnorm"``.
      dtype: computation dtype (e.g. ``jnp.bfloat16`` for mixed precision).
      param_dtype: parameter dtype.
      attention: ``jax.nn.dot_product_attention``'s ``implementation``: None (JAX
        chooses), ``"xla"`` or ``"cudnn"`` (fused flash attention on NVIDIA GPUs,
        bfloat16/float16 only).
    """

    vocab_size: int = 256
    seq_len: int = 256
    depth: int = 8
    width: int = 384
    heads: int = 1
    mlp_ratio: int = 4
    dropout: float = 0.0
    tied_embeddings: bool = True
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    dtype: jax.typing.DTypeLike = jnp.float32
    param_dtype: jax.typing.DTypeLike = jnp.float32
    attention: Literal["xla", "cudnn"] | None = None

    def __post_init__(self):
        for name in ("vocab_size", "seq_len", "depth", "width", "heads", "mlp_ratio"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}.")
        if self.width % self.heads:
            raise ValueError(f"width ({self.width}) must be divisible by heads ({self.heads}).")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}.")
        if self.norm not in ("layernorm", "rmsnorm"):
            raise ValueError(f"norm must be 'layernorm' or 'rmsnorm', got {self.norm!r}.")
        if self.attention not in (None, "xla", "cudnn"):
            raise ValueError(f"attention must be None, 'xla' or 'cudnn', got {self.attention!r}.")

    def num_params(self) -> int:
        """Exact parameter count (see :func:`count_params` for a model's own)."""
        w, v, d, h = self.width, self.vocab_size, self.depth, self.mlp_ratio * self.width
        norm = 2 * w if self.norm == "layernorm" else w
        block = 2 * norm + (w * 3 * w + 3 * w) + (w * w + w) + (w * h + h) + (h * w + w)
        head = 0 if self.tied_embeddings else w * v + v
        return v * w + self.seq_len * w + d * block + norm + head

    def flops_per_token(self) -> int:
        """Training FLOPs per token: 6 x (non-embedding params + attention), forward + backward."""
        non_embedding = self.num_params() - self.vocab_size * self.width - self.seq_len * self.width
        if self.tied_embeddings:
            non_embedding += self.vocab_size * self.width  # the output projection still runs
        attention = 2 * self.depth * self.seq_len * self.width  # QK^T and AV per token
        return 6 * non_embedding + 6 * attention


PRESETS: dict[str, GPTConfig] = {
    "tiny": GPTConfig(depth=2, width=64, heads=2, seq_len=128),
    # The gradient-rounding study's default shape (depth 8, width 384, one head).
    "study": GPTConfig(depth=8, width=384, heads=1),
    # A ladder for scaling sweeps: width grows with depth, 64-wide heads.
    "ladder-xs": GPTConfig(depth=4, width=128, heads=2),
    "ladder-s": GPTConfig(depth=6, width=256, heads=4),
    "ladder-m": GPTConfig(depth=8, width=512, heads=8),
    "ladder-l": GPTConfig(depth=12, width=768, heads=12, seq_len=1024),
    "gpt2-124m": GPTConfig(
        vocab_size=50304, seq_len=1024, depth=12, width=768, heads=12, dtype=jnp.bfloat16
    ),
}


# Dense bf16 peak FLOP/s by device kind (vendor datasheets, SXM parts), for MFU.
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12}


def peak_flops(device_kind: str) -> float | None:
    """The dense bf16 peak of a device kind (``jax.Device.device_kind``), or None."""
    for name, peak in PEAK_FLOPS.items():
        if name in device_kind:
            return peak
    return None


def preset(name: str, **overrides) -> GPTConfig:
    """A named configuration, with fields overridden."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}.")
    return dataclasses.replace(PRESETS[name], **overrides)


def _dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    """Inverted dropout with an explicit key (no RNG state inside the model)."""
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def _norm(config: GPTConfig, rngs: nnx.Rngs) -> nnx.Module:
    cls = nnx.LayerNorm if config.norm == "layernorm" else nnx.RMSNorm
    return cls(config.width, dtype=config.dtype, param_dtype=config.param_dtype, rngs=rngs)


def _linear(config: GPTConfig, n_in: int, n_out: int, rngs: nnx.Rngs, scale: float = 1.0):
    init = nnx.initializers.normal(0.02 * scale)
    return nnx.Linear(
        n_in,
        n_out,
        dtype=config.dtype,
        param_dtype=config.param_dtype,
        kernel_init=init,
        rngs=rngs,
    )


def _embed(config: GPTConfig, rows: int, rngs: nnx.Rngs) -> nnx.Embed:
    return nnx.Embed(
        rows,
        config.width,
        dtype=config.dtype,
        param_dtype=config.param_dtype,
        embedding_init=nnx.initializers.normal(0.02),
        rngs=rngs,
    )


class Block(nnx.Module):
    """Pre-norm transformer block: causal self-attention, then a GELU MLP."""

    def __init__(self, config: GPTConfig, *, rngs: nnx.Rngs):
        w, hidden = config.width, config.mlp_ratio * config.width
        residual_scale = 1.0 / (2 * config.depth) ** 0.5
        self.config = config
        self.norm1 = _norm(config, rngs)
        self.qkv = _linear(config, w, 3 * w, rngs)
        self.proj = _linear(config, w, w, rngs, residual_scale)
        self.norm2 = _norm(config, rngs)
        self.up = _linear(config, w, hidden, rngs)
        self.down = _linear(config, hidden, w, rngs, residual_scale)

    def __call__(self, x: jax.Array, dropout_key: jax.Array | None = None) -> jax.Array:
        b, t, w = x.shape
        k1, k2 = jax.random.split(dropout_key) if dropout_key is not None else (None, None)
        rate = self.config.dropout
        heads = self.config.heads
        q, k, v = jnp.split(self.qkv(self.norm1(x)), 3, axis=-1)
        shape = (b, t, heads, w // heads)
        attn = jax.nn.dot_product_attention(
            q.reshape(shape),
            k.reshape(shape),
            v.reshape(shape),
            is_causal=True,
            implementation=self.config.attention,
        )
        x = x + _dropout(self.proj(attn.reshape(b, t, w)), rate, k1)
        return x + _dropout(self.down(jax.nn.gelu(self.up(self.norm2(x)))), rate, k2)


class GPT(nnx.Module):
    """Token + position embeddings, ``depth`` blocks, a final norm, the output head."""

    def __init__(self, config: GPTConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.embed = _embed(config, config.vocab_size, rngs)
        self.position = _embed(config, config.seq_len, rngs)
        self.blocks = nnx.List([Block(config, rngs=rngs) for _ in range(config.depth)])
        self.norm = _norm(config, rngs)
        if not config.tied_embeddings:
            self.head = _linear(config, config.width, config.vocab_size, rngs)

    def __call__(self, tokens: jax.Array, dropout_key: jax.Array | None = None) -> jax.Array:
        """Logits (float32) for int tokens of shape (batch, time <= seq_len).

        Dropout is applied only when ``dropout_key`` is given.
        """
        t = tokens.shape[-1]
        if t > self.config.seq_len:
            raise ValueError(f"sequence of {t} tokens exceeds seq_len={self.config.seq_len}.")
        x = self.embed(tokens) + self.position(jnp.arange(t))[None]
        keys = (
            jax.random.split(dropout_key, len(self.blocks) + 1)
            if dropout_key is not None
            else [None] * (len(self.blocks) + 1)
        )
        x = _dropout(x, self.config.dropout, keys[0])
        for block, key in zip(self.blocks, keys[1:], strict=True):
            x = block(x, key)
        x = self.norm(x)
        if self.config.tied_embeddings:
            logits = self.embed.attend(x)
        else:
            logits = self.head(x)
        return logits.astype(jnp.float32)


def count_params(model: nnx.Module) -> int:
    """Parameters actually held by ``model``."""
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def next_token_loss(
    model: GPT, tokens: jax.Array, dropout_key: jax.Array | None = None
) -> jax.Array:
    """Mean cross-entropy of predicting tokens[:, 1:] from tokens[:, :-1]."""
    logits = model(tokens[:, :-1], dropout_key)
    targets = tokens[:, 1:]
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, targets[..., None], axis=-1))
