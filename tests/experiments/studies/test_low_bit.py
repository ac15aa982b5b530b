import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gqc_jax
from experiments.studies import low_bit as lb


def test_e5m2_keeps_two_mantissa_bits_and_the_per_tensor_scale():
    # The largest |g|, 1.75, maps to E5M2's largest, 57344 = 1.75 x 2^15: the scale
    # is 2^-15 and values on the E5M2 grid are kept exactly.
    g = jnp.asarray([1.75, -0.75, 0.3, 0.0, 1e-10], jnp.float32)
    out = np.asarray(lb.round_e5m2(g))
    assert out[0] == 1.75 and out[1] == -0.75 and out[3] == 0.0
    # 0.3 is 1.2 x 2^-2: with 2 mantissa bits the nearest is 1.25 x 2^-2.
    assert out[2] == pytest.approx(0.3125, rel=1e-6)
    # Below the format's range under the scale (2^-16 / 57344 of the largest): flushed.
    assert out[4] == 0.0
    assert np.all(np.asarray(lb.round_e5m2(jnp.zeros(3))) == 0.0)


@pytest.mark.parametrize("bits", [1, 3])
def test_one_transform_reproduces_each_setting(bits):
    g = {"w": jax.random.normal(jax.random.key(0), (64,))}
    tx = lb.low_bit_rounding(seed=5)
    base = tx.init(g)

    def run(kind):
        state = base._replace(
            rtn=base.rtn._replace(digits=jnp.int32(bits)),
            sr=base.sr._replace(digits=jnp.int32(bits)),
            kind=jnp.int32(kind),
        )
        return tx.update(g, state)

    out, state = run(0)
    np.testing.assert_array_equal(out["w"], g["w"])
    assert float(state.fraction_changed) == 0.0 and float(state.cosine) == pytest.approx(1.0)
    for kind, expected in (
        (1, gqc_jax.round_gradients(bits, mode="mantissa_bits")),
        (2, gqc_jax.round_gradients(bits, mode="mantissa_bits", stochastic=True, seed=5)),
    ):
        want, _ = expected.update(g, expected.init(g))
        out, state = run(kind)
        np.testing.assert_array_equal(out["w"], want["w"])
        assert float(state.fraction_changed) > 0.9 and float(state.cosine) < 1.0
    out, _ = run(3)
    np.testing.assert_array_equal(out["w"], lb.round_e5m2(g["w"]))


def test_cli_writes_the_page_and_reruns_from_files(tmp_path, data_dir, capsys):
    args = [
        "--steps=2",
        "--seeds=0,1",
        "--size=1x8",
        f"--data_dir={data_dir}",
        f"--out={tmp_path / 'runs'}",
        f"--page={tmp_path / 'lb.md'}",
    ]
    assert lb.main(args) == 0
    page = (tmp_path / "lb.md").read_text()
    assert (tmp_path / "lb.png").stat().st_size > 10_000 and "lb.png" in page
    assert "## Rounding every microbatch (2 seeds)" in page
    assert "## Rounding every window mean (2 seeds)" in page
    assert "| 1 bit, RTN |" in page and "| E5M2, per-tensor scale (RTN) |" in page
    cells = sorted(p.name for p in (tmp_path / "runs").glob("*.json"))
    assert cells == [f"{p}-seed{s}.json" for p in ("microbatch", "window") for s in (0, 1)]
    cell = lb.json.loads((tmp_path / "runs" / "window-seed0.json").read_text())
    assert cell["steps"] == 2 and len(cell["val_loss"]["none"]) == 3
    # Paired: every setting starts from the same initialisation.
    assert len({v[0] for v in cell["val_loss"].values()}) == 1
    assert cell["fraction_changed"]["none"] == 0.0 and cell["fraction_changed"]["rtn-1"] > 0.9
    capsys.readouterr()
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*.json")}
    assert lb.main(args) == 0  # nothing retrains: the cells are read back
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert (tmp_path / "lb.md").read_text() == page
