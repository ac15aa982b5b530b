"""The arithmetic behind :mod:`gqc_jax.rounding`: exact tables, one module per
rounding rule, and the random bits of stochastic rounding."""
