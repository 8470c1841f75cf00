"""Hyper-parameter choice: a grid or random search over ``training.search_space``.

Each trial is the spec with some training fields changed (``training.<field>`` or,
for method fields such as ``r`` or ``alpha``, the searched method's field). A trial
is trained by a callable ``train_fn(trial_spec: dict, out_dir: Path) -> model dir``
(by default the training area's ``train_adapter``), evaluated by evaluate_model on
the validation split and ranked by the same selection as the leaderboard.
"""

import itertools
import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aicd.components.errors import EvaluationError
from aicd.components.spec import MethodSpec, Spec, TrainingSpec

log = logging.getLogger(__name__)
TrainFn = Callable[[dict[str, Any], Path], str | Path]


def plan_trials(spec: Spec) -> list[dict[str, Any]]:
    """The trials' parameters: the full grid, or ``search_trials`` random points (seeded), at most that many."""
    space = dict(spec.training.search_space)
    if not space:
        return [{}]
    for name, values in space.items():
        if not values:
            raise EvaluationError(f"`training.search_space.{name}` is empty", "list at least one value")
        if name not in TrainingSpec.model_fields and name not in MethodSpec.model_fields:
            raise EvaluationError(f"`training.search_space.{name}` is not a training or method field",
                                  "use fields such as learning_rate, epochs, batch_size, r, alpha or dropout")
    names = sorted(space)
    grid = [dict(zip(names, combo)) for combo in itertools.product(*(space[n] for n in names))]
    if spec.training.search_strategy == "random":
        rng = random.Random(spec.training.seed)
        return rng.sample(grid, min(spec.training.search_trials, len(grid)))
    return grid[:spec.training.search_trials]


def trial_spec(spec: Spec, params: dict[str, Any], method: str) -> dict[str, Any]:
    """The spec dict of one trial: training fields set, method fields set on ``method``."""
    from aicd.components.spec import spec_dict

    data = spec_dict(spec)
    data["training"]["search_space"] = {}
    for name, value in params.items():
        if name in TrainingSpec.model_fields:
            data["training"][name] = value
        for m in data["training"]["methods"]:
            if m["name"] == method and name in MethodSpec.model_fields:
                m[name] = value
    return data


def default_train_fn(dataset_dir: str | Path, method: str) -> TrainFn:
    def train(trial: dict[str, Any], out_dir: Path) -> Path:
        from aicd.components.training.adapter import train_adapter

        return train_adapter(trial, dataset_dir, method, out_dir, progress=False).model_dir
    return train


def search_hyperparameters(spec: Spec | dict, dataset_dir: str | Path, out_dir: str | Path, *,
                           train_fn: TrainFn | None = None, method: str | None = None) -> dict[str, Any]:
    """Train and evaluate every trial; ``{"trials": [...], "best": {...}}`` ranked by the selection rule."""
    from aicd.components.evaluation.evaluate import as_spec, evaluate_model
    from aicd.components.evaluation.leaderboard import entry, select_candidate

    spec = as_spec(spec)
    method = method or spec.training.methods[0].name
    train_fn = train_fn or default_train_fn(dataset_dir, method)
    out_dir = Path(out_dir)
    entries = []
    for k, params in enumerate(plan_trials(spec)):
        trial = trial_spec(spec, params, method)
        model_dir = Path(train_fn(trial, out_dir / f"trial-{k}" / "model"))
        report = evaluate_model(trial, dataset_dir, out_dir / f"trial-{k}" / "eval", model=model_dir,
                                split="validation")
        entries.append(entry(report, spec.candidate().name, f"trial-{k}", out_dir / f"trial-{k}" / "eval",
                             selectable=True, params=params, model_dir=str(model_dir)))
        log.info("trial %d %s: %s", k, params, entries[-1]["metrics"].get(spec.metrics.primary))
    board = select_candidate(spec, entries)
    best = next(e for e in board["entries"] if e["name"] == board["chosen"]["name"])
    return {"method": method, "trials": board["entries"], "best": {"params": best["params"],
                                                                    "model_dir": best["model_dir"],
                                                                    "score": best["score"]}}
