"""The GPU campaign's machinery at the smoke scale: runs through the training
program, skips what is done or does not fit, and a byte-identical page."""

import json

import pytest

from experiments import campaign


def test_smoke_campaign_runs_the_plan_and_writes_the_page(tmp_path, capsys):
    out, results = tmp_path / "out", tmp_path / "out" / "results"
    run = ["run", "--scale", "smoke", "--out", str(out), "--results", str(results)]
    # Too small a budget: nothing fits, nothing is trained, nothing breaks.
    assert campaign.main([*run, "--budget", "5"]) == 0
    assert "needs ~" in capsys.readouterr().out and not list(results.glob("*.json"))
    assert campaign.main([*run, "--budget", "60", "--commit", "abc"]) == 0
    found = campaign.read_results(results)
    assert set(found) == {"sweep-adamw-lr3e-3", "full-gnts-relative-s0"}
    full = found["full-gnts-relative-s0"]
    # The full run took its learning rate from the sweep, and trained the whole budget.
    assert full["lr"] == 3e-3 and full["tokens"] == 16_384 and full["commit"] == "abc"
    assert full["optimizer_steps"] < found["sweep-adamw-lr3e-3"]["optimizer_steps"]
    assert full["eval_curve"][0][0] == 0 and full["eval_curve"][-1][0] == 16_384
    assert full["tokens_per_s"] > 0 and 0 < full["val_loss"] < 6
    # Done runs are not trained again.
    assert campaign.run_campaign("smoke", 60, out, results, tmp_path / "work", "abc") == []
    page = tmp_path / "campaign.md"
    campaign.main(["page", "--scale", "smoke", "--results", str(results), "--page", str(page)])
    text, figure = page.read_text(), page.with_suffix(".png").read_bytes()
    assert "| full-gnts-relative-s0 | 3.0e-03 | 16,384 |" in text
    assert "- `gnts-relative`: `gqc.controller=gnts`, `gqc.relative=True`" in text
    campaign.main(["page", "--scale", "smoke", "--results", str(results), "--page", str(page)])
    assert page.read_text() == text and page.with_suffix(".png").read_bytes() == figure


@pytest.mark.parametrize("scale", ["gpu", "smoke"])
def test_sweeps_choose_on_a_seed_no_full_run_reports(scale):
    """A rate chosen and scored on the same seed favours that seed's noise."""
    plan = campaign.load_plan(scale)

    def seeds(run):
        return run.settings.get("train.seed", 0), run.settings.get("data.seed", 0)

    swept = {seeds(r) for r in plan.runs if r.sweep}
    assert swept and not swept & {seeds(r) for r in plan.runs if r.lr_from}


def test_the_gpu_plans_gns_is_adaptive():
    """At tolerance >= 1 GNS steps at every second draw: a fixed window of 2."""
    for run in campaign.load_plan("gpu").runs:
        if run.settings["gqc.controller"] == "gns":
            assert 0 < run.settings["gqc.tolerance"] < 1, run.name


def test_the_gpu_plans_gns_has_its_fixed_window_control():
    """GNS at tolerance 0.05 stepped on windows of 2 on the CPU pages: each GNS run
    has a fixed window of 2 beside it, with the same coupling, rate and seed."""
    runs = campaign.load_plan("gpu").runs
    coupling = ("gqc.lr_scaling", "gqc.token_time", "train.seed", "data.seed", "train.tokens")
    for run in runs:
        if run.settings["gqc.controller"] == "gns":
            controls = [
                r
                for r in runs
                if r.settings["gqc.controller"] == "sbc"
                and r.settings["gqc.sbc_draws"] == 2
                and r.lr_from == run.lr_from
                and all(r.settings.get(k) == run.settings.get(k) for k in coupling)
            ]
            assert controls, run.name


def test_pending_runs_and_plan_errors_are_stated(tmp_path):
    page = campaign.page("smoke", tmp_path / "none", tmp_path / "campaign.md")
    assert "**No answer yet**" in page.read_text() and "pending (lr from sweep `adamw`)" in (
        page.read_text()
    )
    plan = campaign.load_plan("gpu")
    assert all(r.tokens > 0 for r in plan.runs) and plan.runs[0].probe == 30
    bad = tmp_path / "plan.yaml"
    smoke = {
        "estimate_tokens_per_s": 1,
        "compile_s": 1,
        "margin": 1,
        "defaults": {},
        "arms": {"a": {}},
        "runs": [{"name": "x", "stage": 1, "arm": "a", "settings": {"optim.lrr": 1}}],
    }
    bad.write_text(json.dumps({"smoke": smoke}))
    with pytest.raises(ValueError, match="unknown config key 'optim.lrr'"):
        campaign.load_plan("smoke", bad)
    smoke["runs"] = [{"name": "x", "stage": 1, "arm": "a", "lr_from": "nope"}]
    bad.write_text(json.dumps({"smoke": smoke}))
    with pytest.raises(ValueError, match="takes lr_from 'nope', no sweep"):
        campaign.load_plan("smoke", bad)


def test_the_committed_page_is_regenerated_from_the_committed_results(tmp_path):
    page = campaign.page("gpu", campaign.RESULTS, tmp_path / "campaign.md")
    assert page.read_text() == campaign.PAGE.read_text()


def test_a_run_the_budget_cuts_leaves_no_result(tmp_path, monkeypatch, capsys):
    def cut(config, source=None):  # the session's time limit ended the run
        return {"time_limited": True, "microbatches": 1}

    monkeypatch.setattr(campaign, "train", cut)
    results = tmp_path / "out" / "results"
    trained = campaign.run_campaign("smoke", 60, tmp_path / "out", results, tmp_path / "w", "abc")
    out = capsys.readouterr().out
    assert trained == [] and not list(results.glob("*.json"))
    assert "sweep-adamw-lr3e-3: cut at the budget; no result" in out
    # The run that takes its rate from that sweep waits for it.
    assert "full-gnts-relative-s0: waits for sweep 'adamw'" in out
