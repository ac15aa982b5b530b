"""SNR: unbiased noise-scale estimators, draws per step, scale invariance."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gqc_jax

DIM = 32


def _stream(seed, count, mean=0.5, std=1.5, scale=1.0):
    """Gradients g = mean + std * N(0, I): |G|^2 = DIM mean^2, tr(Sigma) = DIM std^2."""
    noise = jax.random.normal(jax.random.key(seed), (count, DIM))
    return {"w": scale * (mean + std * noise)}


def _run(tx, grads):
    params = {"w": jnp.zeros(DIM)}

    def body(state, g):
        _, state = tx.update(g, state, params)
        s = gqc_jax.stats(state)
        return state, (s["stepped"], s["last_num_draws"], s["signal"], s["noise"])

    _, out = jax.jit(lambda g: jax.lax.scan(body, tx.init(params), g))(grads)
    return jax.device_get(out)


def test_estimators_are_unbiased():
    """Windows of exactly k = 8 draws (the test never passes): the mean of the
    per-window estimates matches |G|^2 = 8 and tr(Sigma) = 72 within 4 standard
    errors of the sample of windows."""
    tx = gqc_jax.snr(optax.sgd(0.1), noise_ratio=1e-9, max_draws=8)
    stepped, _, signal, noise = _run(tx, _stream(0, 8 * 3000))
    signal, noise = signal[stepped], noise[stepped]
    assert signal.size == 3000
    for estimate, truth in ((signal, DIM * 0.25), (noise, DIM * 2.25)):
        se = estimate.std(ddof=1) / np.sqrt(estimate.size)
        assert abs(estimate.mean() - truth) < 4 * se, (estimate.mean(), truth, se)


@pytest.mark.parametrize("rho", [0.25, 0.5])
def test_draws_per_step_follow_the_noise_scale(rho):
    """B_noise = tr(Sigma) / |G|^2 = 9 microbatches: windows of about 9 / rho draws.
    Measured: 36.3 and 18.3 draws for targets 36 and 18; asserted within 15%."""
    tx = gqc_jax.snr(optax.sgd(0.1), noise_ratio=rho, max_draws=256)
    stepped, sizes, _, _ = _run(tx, _stream(1, 20_000))
    mean_size = sizes[stepped].mean()
    target = 9.0 / rho
    assert 0.85 * target < mean_size < 1.15 * target, (mean_size, target)


def test_scale_invariance_of_snr_and_contrast_with_absolute_gnts():
    grads = _stream(2, 600)
    big = jax.tree.map(lambda g: 1000.0 * g, grads)
    snr = gqc_jax.snr(optax.sgd(0.1), noise_ratio=0.5, max_draws=64)
    a, b = _run(snr, grads)[0], _run(snr, big)[0]
    np.testing.assert_array_equal(a, b)
    assert 10 < a.sum() < 300

    def gnts_decisions(g):
        tx = gqc_jax.gnts(optax.sgd(0.1), threshold=3.5, max_draws=64)
        params = {"w": jnp.zeros(DIM)}

        def body(state, x):
            _, state = tx.update(x, state, params)
            return state, state.stepped

        return np.asarray(jax.lax.scan(body, tx.init(params), g)[1])

    small_steps, big_steps = gnts_decisions(grads), gnts_decisions(big)
    assert small_steps.sum() > 3 * big_steps.sum()  # absolute threshold: x1000 only hits the cap


def test_stats_and_bad_input():
    tx = gqc_jax.snr(optax.sgd(0.1), noise_ratio=0.5)
    s = gqc_jax.stats(tx.init({"w": jnp.zeros(2)}))
    assert {"noise_scale", "signal", "noise", "noise_ratio"} <= set(s)
    with pytest.raises(ValueError, match="noise_ratio must be finite and > 0"):
        gqc_jax.snr(optax.sgd(0.1), noise_ratio=0.0)
    with pytest.raises(ValueError, match="min_draws must be >= 2"):
        gqc_jax.snr(optax.sgd(0.1), min_draws=1)
    with pytest.raises(ValueError, match="smoothing must be in"):
        gqc_jax.snr(optax.sgd(0.1), smoothing=1.0)


def test_smoothing_keeps_decisions_finite_and_reduces_window_spread():
    grads = _stream(3, 6000)
    plain = _run(gqc_jax.snr(optax.sgd(0.1), 0.5, max_draws=128), grads)
    smooth = _run(gqc_jax.snr(optax.sgd(0.1), 0.5, max_draws=128, smoothing=0.9), grads)
    sizes_plain = plain[1][plain[0]]
    sizes_smooth = smooth[1][smooth[0]]
    assert sizes_smooth.std() < sizes_plain.std()


def _gnts_relative_run(grads, **kwargs):
    tx = gqc_jax.gnts(optax.sgd(0.1), relative=True, max_draws=64, **kwargs)
    params = {"w": jnp.zeros(DIM)}

    def body(state, g):
        _, state = tx.update(g, state, params)
        s = gqc_jax.stats(state)
        return state, (s["stepped"], s["last_num_draws"], s["reference_norm"])

    return jax.device_get(jax.jit(lambda g: jax.lax.scan(body, tx.init(params), g)[1])(grads))


def test_relative_gnts_is_scale_invariant():
    grads = _stream(4, 800)
    big = jax.tree.map(lambda g: 1000.0 * g, grads)
    a = _gnts_relative_run(grads, threshold=0.4)
    b = _gnts_relative_run(big, threshold=0.4)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(b[2], 1000.0 * a[2], rtol=1e-4)
    assert 20 < a[0].sum() < 400


def test_relative_gnts_after_a_20x_outlier_microbatch():
    """One microbatch with 20x the typical norm: its window draws until the mean
    is diluted (here to the cap), the reference norm rises by at most
    1 + beta * (clip - 1), and later windows return to the usual size."""
    grads = _stream(5, 3000)
    w = np.array(grads["w"])
    w[1500] *= 20.0
    stepped, sizes, reference = _gnts_relative_run({"w": jnp.asarray(w)}, threshold=0.4)
    before = sizes[:1500][stepped[:1500]]
    window_end = 1500 + int(np.argmax(stepped[1500:]))
    assert sizes[window_end] > 3 * before.mean()  # the outlier's window drew much longer
    typical = reference[1000:1500].mean()
    assert reference[1500] <= typical * (1 + 0.05 * 3) * 1.05
    after = sizes[window_end + 1 :][stepped[window_end + 1 :]]
    assert abs(after[5:].mean() - before.mean()) < 0.25 * before.mean()


def test_relative_gnts_bad_input():
    with pytest.raises(ValueError, match="reference_beta must be in"):
        gqc_jax.gnts(optax.sgd(0.1), relative=True, reference_beta=0.0)
    with pytest.raises(ValueError, match="outlier_clip must be finite and >= 1"):
        gqc_jax.gnts(optax.sgd(0.1), relative=True, outlier_clip=0.5)
