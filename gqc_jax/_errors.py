"""The library's one rule for bad arguments.

A wrong *type* raises ``TypeError``: a str, ``None`` or a non-integral float
where an int is expected, a bool where a number is, a non-callable where a
schedule is. The right type with a wrong *value* raises ``ValueError``: out of
range, non-finite, not a scalar, an unknown option string. Both name the
argument and repeat the bad value.

A few checks of 0.1 raised ``ValueError`` for a wrong type (``round_gradients``'
``digits``, the ``gqc_jax.schedules`` step counts, ``batch_size_warmup``'s
``total_microbatches`` and ``seesaw``'s ``warmup_microbatches``). They now raise
:class:`ArgumentTypeError`, a ``TypeError`` that is also a ``ValueError``, so
code written against 0.1 that catches ``ValueError`` keeps working.
"""

from __future__ import annotations

import numbers

import jax
import numpy as np


class ArgumentTypeError(TypeError, ValueError):
    """A wrong argument type: a ``TypeError``, and a ``ValueError`` for 0.1 callers."""


def is_int(value: object) -> bool:
    """True for a Python or NumPy integer, or an integer-dtype scalar array (not a bool)."""
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, (numbers.Integral, np.integer)):
        return True
    if isinstance(value, (np.ndarray, jax.Array)) and not isinstance(value, jax.core.Tracer):
        return np.ndim(value) == 0 and np.issubdtype(np.asarray(value).dtype, np.integer)
    return False
