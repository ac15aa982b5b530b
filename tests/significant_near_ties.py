"""Every float32 input at which a significant-digits rule could misround.

An implementation whose scaled value |x| 10^s is within a relative error e of
the exact one can misround only where that value lies within e of j + 1/2 (and
is not exactly on it); its back conversion r 10^-s, within e' relative, can
misround only within e' of a float32 midpoint. Both sets are small, so they are
enumerated here, over every normal float32 and every digit setting 1-8, and
stored in ``data/significant_near_ties.npz``; the tests check the rounding on
each of them against exact rational arithmetic.

For each candidate set the search runs over (digits, s, binary exponent) and
looks for integers n in a range with frac(n c) within 2^-band of 1/2, c = 10^s
2^E: n c mod 1 is n C / 2^64 mod 1 to within 2^-40 (C = c's fraction to 64
bits), which wrapping uint64 arithmetic gives exactly; every hit is confirmed
with exact fractions.

    python -m tests.significant_near_ties   # rewrites the data file (about 7 min here)
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "data" / "significant_near_ties.npz"
# |x| 10^s within 2^-22 of j + 1/2: every input where a relative error below
# 2^-46 could misround (the scaled value is below 2^24 where rounding applies).
FORWARD_BAND = 22
# r 10^-s within 2^-26 float32 spacings of a float32 midpoint: every (r, s) where
# a relative error below 2^-50 could misround.
BACK_BAND = 26
DIGITS = range(1, 9)
EXPONENTS = range(-126 - 23, 127 - 23 + 1)  # E of M 2^E, M a 24-bit significand


def _near_half(lo: int, hi: int, c: Fraction, band: int) -> list[int]:
    """Integers n in [lo, hi) with 0 < |frac(n c) - 1/2| <= 2^-band."""
    fraction = c - math.floor(c)
    if lo >= hi or fraction == 0:
        return []
    step = np.uint64(math.floor(fraction * 2**64))
    width = np.uint64(2 ** (64 - band) + 2**26)  # widened by the 2^-40 above
    n = np.arange(lo, hi, dtype=np.uint64)
    hits = n[(n * step - np.uint64(2**63) + width) < np.uint64(2) * width]
    exact = []
    for m in hits.tolist():
        distance = abs(m * c - math.floor(m * c) - Fraction(1, 2))
        if 0 < distance <= Fraction(1, 2**band):
            exact.append(m)
    return exact


def forward(band: int = FORWARD_BAND) -> np.ndarray:
    """Rows (digits, M, E): x = M 2^E with |x| 10^s within 2^-band of j + 1/2,
    not on it, and |x| 10^s < 2^24 (above, x is the correctly rounded result)."""
    rows = []
    for d in DIGITS:
        low, high = Fraction(10) ** (d - 1), min(Fraction(10) ** d, Fraction(2**24))
        for s in range(d - 1 - 38, d - 1 + 39):
            for e in EXPONENTS:
                c = Fraction(10) ** s * Fraction(2) ** e
                lo, hi = max(2**23, math.ceil(low / c)), min(2**24, math.ceil(high / c))
                rows += [(d, m, e) for m in _near_half(lo, hi, c, band)]
    return np.array(rows, np.int64).reshape(-1, 3)


def back(band: int = BACK_BAND) -> np.ndarray:
    """Rows (digits, r, s): r 10^-s, r in [10^(d-1), min(10^d, 2^24)], within
    2^-band float32 spacings of a float32 midpoint of the normal range, not on it
    (a larger r comes from a scaled value of 2^24 or more, where x is kept)."""
    rows = []
    for d in DIGITS:
        for s in range(d - 1 - 38, d - 1 + 39):
            for e in EXPONENTS:
                c = Fraction(10) ** -s / Fraction(2) ** e  # r c in [2^23, 2^24)
                lo = max(10 ** (d - 1), math.ceil(Fraction(2**23) / c))
                hi = min(10**d + 1, 2**24 + 1, math.ceil(Fraction(2**24) / c))
                rows += [(d, r, s) for r in _near_half(lo, hi, c, band)]
    return np.array(rows, np.int64).reshape(-1, 3)


def inputs(rows_forward: np.ndarray, rows_back: np.ndarray) -> dict[int, np.ndarray]:
    """float32 inputs per digit setting: each forward x, and each back r 10^-s
    with its two float32 neighbours; both signs."""
    values: dict[int, list[float]] = {d: [] for d in DIGITS}
    for d, m, e in rows_forward.tolist():
        values[d].append(math.ldexp(m, e))
    for d, r, s in rows_back.tolist():
        v = np.float32(float(Fraction(r) * Fraction(10) ** -s))
        values[d] += [v, np.nextafter(v, np.float32(0)), np.nextafter(v, np.float32(np.inf))]
    out = {}
    for d, v in values.items():
        v = np.array(v, np.float32)
        out[d] = np.concatenate([v, -v])
    return out


def load() -> tuple[np.ndarray, np.ndarray]:
    with np.load(DATA) as data:
        return data["forward"], data["back"]


if __name__ == "__main__":
    DATA.parent.mkdir(exist_ok=True)
    f, b = forward(), back()
    np.savez_compressed(DATA, forward=f, back=b)
    print(f"{DATA}: {len(f)} forward rows (band 2^-{FORWARD_BAND}), {len(b)} back (2^-{BACK_BAND})")
