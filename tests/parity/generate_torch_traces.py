"""Records torch-gqc 0.10.4's decisions and parameters on seeded gradient streams.

Not run by CI. Needs a separate environment with the reference:

    python3 -m venv /tmp/torchref
    /tmp/torchref/bin/pip install torch==2.13.0 torch-gqc==0.10.4 \\
        torch-schedule-anything==1.2.3 numpy==2.4.6 scipy==1.17.1
    /tmp/torchref/bin/python tests/parity/generate_torch_traces.py

It writes ``tests/parity/torch_gqc_traces.npz``, which ``tests/test_parity.py``
replays through gqc_jax. Each case feeds the reference one microbatch gradient
per ``step()`` through a real backward pass (``loss = sum(p * G)``, so
``p.grad == G`` and GNS's autograd hooks fire), plus the loss for MHT, and
records the step decision and the parameters after every call.
"""

from __future__ import annotations

import json
from pathlib import Path

import gradient_quality_control as gqc
import numpy as np
import torch
from gradient_quality_control.implementations import metric_hypothesis_test as mht_module

OUT = Path(__file__).with_name("torch_gqc_traces.npz")
SHAPES = {"w": (4, 5), "b": (5,)}
CALLS = 120
SGD = {"kind": "sgd", "lr": 0.05, "momentum": 0.9}
ADAMW = {"kind": "adamw", "lr": 0.01, "weight_decay": 0.1}


def make_optimizer(spec, params):
    if spec["kind"] == "sgd":
        return torch.optim.SGD(params, lr=spec["lr"], momentum=spec["momentum"])
    return torch.optim.AdamW(params, lr=spec["lr"], weight_decay=spec["weight_decay"])


def build(case, params):
    opt = make_optimizer(case["optimizer"], params)
    c, hp, schedule = case["controller"], case["hparams"], None
    m = hp.get("max_draws", 64)
    if c == "gnts":
        w = gqc.OptimizerWrapperGNTS(opt, max_batch_draws=m)
        w.param_groups[0]["gradient_norm_threshold"] = hp["threshold"]
    elif c == "gns":
        w = gqc.OptimizerWrapperGNS(opt, max_batch_draws=m)
        w.param_groups[0]["noise_tolerance"] = hp["tolerance"]
    elif c == "gnr":
        w = gqc.OptimizerWrapperGNR(opt)
        w.param_groups[0]["target_gradient_norm"] = hp["target_norm"]
    elif c == "mht":
        w = mht_module.OptimizerWrapperMHT(opt, max_batch_draws=m, update_beta=hp["update_beta"])
        w.param_groups[0]["confidence_level"] = hp["confidence"]
        w.param_groups[0]["percent_error_threshold"] = hp["percent_error"]
    elif c == "sbc":
        w = gqc.OptimizerWrapperSBC(opt, physical_batch_size=hp["physical"], max_batch_draws=m)
        w.param_groups[0]["logical_batch_size"] = hp["logical"]
    elif c == "gnts_with_cosine_annealing":
        make = (
            gqc.make_gnts_with_cosine_annealing_schedule_conventional_lr
            if hp.get("conventional_lr")
            else gqc.make_gnts_with_cosine_annealing_schedule
        )
        w, schedule = make(
            opt,
            num_training_steps=hp["num_training_steps"],
            num_warmup_steps=hp["num_warmup_steps"],
            initial_threshold=hp["initial_threshold"],
            final_threshold=hp["final_threshold"],
            warmup_multiplier=hp["warmup_multiplier"],
            max_batch_draws=m,
        )
    elif c == "gns_with_cosine_annealing":
        w, schedule = gqc.make_gns_with_cosine_annealing_schedule(
            opt,
            initial_tolerance=hp["initial_tolerance"],
            final_tolerance=hp["final_tolerance"],
            num_training_steps=hp["num_training_steps"],
            num_warmup_steps=hp["num_warmup_steps"],
            warmup_multiplier=hp["warmup_multiplier"],
            max_batch_draws=m,
        )
    elif c == "gns_default":
        w, schedule = gqc.make_gns_default(
            opt,
            tolerance=hp["tolerance"],
            num_training_steps=hp["num_training_steps"],
            num_warmup_steps=hp["num_warmup_steps"],
            max_batch_draws=m,
        )
    elif c == "gnr_with_cosine_annealing":
        make = (
            gqc.make_gnr_with_cosine_annealing_schedule_conventional_lr
            if hp.get("conventional_lr")
            else gqc.make_gnr_with_cosine_annealing_schedule
        )
        w, schedule = make(
            opt,
            initial_norm=hp["initial_norm"],
            final_norm=hp["final_norm"],
            num_training_steps=hp["num_training_steps"],
            num_warmup_steps=hp["num_warmup_steps"],
        )
    elif c == "mht_with_warmup":
        w, schedule = mht_module.make_mht_with_warmup_schedule(
            opt,
            confidence_level=hp["confidence_level"],
            percent_error_threshold=hp["percent_error_threshold"],
            num_training_steps=hp["num_training_steps"],
            num_warmup_steps=hp["num_warmup_steps"],
            max_batch_draws=m,
        )
    elif c == "sbc_with_polynomial":
        make = (
            gqc.make_sbc_with_polynomial_schedule_conventional_lr
            if hp.get("conventional_lr")
            else gqc.make_sbc_with_polynomial_schedule
        )
        w, schedule = make(
            opt,
            physical_batch_size=hp["physical"],
            initial_batch_size=hp["initial_batch_size"],
            final_batch_size=hp["final_batch_size"],
            num_training_steps=hp["num_training_steps"],
            num_warmup_steps=hp["num_warmup_steps"],
            polynomial_power=hp["polynomial_power"],
            max_batch_draws=m,
        )
    else:
        raise ValueError(c)
    return w, schedule


def cases():
    factory = {"num_training_steps": CALLS, "num_warmup_steps": 20}
    for opt in (SGD, ADAMW):
        yield {
            "controller": "gnts",
            "hparams": {"threshold": 1.1, "max_draws": 8},
            "optimizer": opt,
        }
        yield {
            "controller": "gns",
            "hparams": {"tolerance": 0.01, "max_draws": 8},
            "optimizer": opt,
        }
        yield {"controller": "gnr", "hparams": {"target_norm": 0.7}, "optimizer": opt}
        yield {
            "controller": "mht",
            "hparams": {
                "confidence": 0.9,
                "percent_error": 0.05,
                "update_beta": 0.1,
                "max_draws": 8,
            },
            "optimizer": opt,
        }
        yield {"controller": "sbc", "hparams": {"logical": 7, "physical": 2}, "optimizer": opt}
    # Tight settings whose windows often end at the draw cap.
    yield {"controller": "gnts", "hparams": {"threshold": 1.0, "max_draws": 5}, "optimizer": ADAMW}
    yield {
        "controller": "mht",
        "hparams": {"confidence": 0.95, "percent_error": 0.02, "update_beta": 0.05, "max_draws": 6},
        "optimizer": SGD,
    }
    for conventional in (False, True):
        hp = {
            "initial_threshold": 1.3,
            "final_threshold": 0.95,
            "warmup_multiplier": 3,
            "max_draws": 12,
        }
        yield {
            "controller": "gnts_with_cosine_annealing",
            "hparams": {**factory, **hp, "conventional_lr": conventional},
            "optimizer": ADAMW,
        }
        yield {
            "controller": "gnr_with_cosine_annealing",
            "hparams": {
                **factory,
                "initial_norm": 1.0,
                "final_norm": 0.3,
                "conventional_lr": conventional,
            },
            "optimizer": ADAMW,
        }
        yield {
            "controller": "sbc_with_polynomial",
            "hparams": {
                **factory,
                "physical": 2,
                "initial_batch_size": 4,
                "final_batch_size": 16,
                "polynomial_power": 2.0,
                "max_draws": 12,
                "conventional_lr": conventional,
            },
            "optimizer": ADAMW,
        }
    yield {
        "controller": "gns_with_cosine_annealing",
        "hparams": {
            **factory,
            "initial_tolerance": 0.02,
            "final_tolerance": 0.005,
            "warmup_multiplier": 10,
            "max_draws": 12,
        },
        "optimizer": ADAMW,
    }
    yield {
        "controller": "gns_default",
        "hparams": {**factory, "tolerance": 0.01, "max_draws": 12},
        "optimizer": SGD,
    }
    yield {
        "controller": "mht_with_warmup",
        "hparams": {
            **factory,
            "confidence_level": 0.9,
            "percent_error_threshold": 0.04,
            "max_draws": 12,
        },
        "optimizer": ADAMW,
    }


def run(case, seed):
    rng = np.random.default_rng(seed)
    init = {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
    signal = {k: 0.15 * rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
    grads = {
        k: (signal[k] + 0.35 * rng.standard_normal((CALLS, *s))).astype(np.float32)
        for k, s in SHAPES.items()
    }
    losses = (2.0 + 0.12 * rng.standard_normal(CALLS)).astype(np.float32)
    params = [torch.nn.Parameter(torch.tensor(init[k])) for k in SHAPES]
    wrapper, schedule = build(case, params)
    decisions, history = [], []
    for i in range(CALLS):
        loss = sum(
            (p * torch.tensor(grads[k][i])).sum() for p, k in zip(params, SHAPES, strict=True)
        )
        loss.backward()
        if case["controller"].startswith("mht"):
            stepped = wrapper.step(float(losses[i]))
        else:
            stepped = wrapper.step()
        if schedule is not None:
            schedule.step()
        decisions.append(bool(stepped))
        history.append(np.concatenate([p.detach().numpy().ravel() for p in params]))
    return {
        "init": init,
        "grads": grads,
        "losses": losses,
        "decisions": np.array(decisions),
        "params": np.array(history, np.float32),
    }


def main():
    arrays, index = {}, []
    for n, case in enumerate(cases()):
        out = run(case, seed=1000 + n)
        index.append(case)
        arrays[f"{n}/losses"] = out["losses"]
        arrays[f"{n}/decisions"] = out["decisions"]
        arrays[f"{n}/params"] = out["params"]
        for k in SHAPES:
            arrays[f"{n}/init/{k}"] = out["init"][k]
            arrays[f"{n}/grads/{k}"] = out["grads"][k]
        steps = int(out["decisions"].sum())
        print(
            f"{n:2d} {case['controller']:<28} {case['optimizer']['kind']:<6} steps {steps:3d}/{CALLS}"
        )
    arrays["index"] = np.array(json.dumps(index))
    arrays["versions"] = np.array(
        json.dumps(
            {"torch": torch.__version__, "torch-gqc": gqc.__version__, "numpy": np.__version__}
        )
    )
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
