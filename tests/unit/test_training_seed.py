"""`training.seed` fixes a classifier's run: its new head too, which is drawn when the base loads.

Before this, the head was drawn from whatever random state the process had when the model loaded, so
two runs of one spec and seed diverged from the first step (review-sentiment: first loss 0.8025 against
0.7924, validation macro-F1 0.511 against 0.589). The tests disturb the global random state between two
runs, as a different process (or a step run earlier in the same one) would.
"""

import pytest
from helpers.adapters import LABELS
from helpers.data import make_dataset, review_rows
from helpers.specs import classification_spec

from aicd.components.models import load_classifier

LORA = {"name": "lora", "method": "lora", "r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}


def _head(model):
    return {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("score", "classifier"))}


@pytest.mark.parametrize("model", ["tiny_causal_lm", "tiny_encoder"])
def test_the_new_head_depends_on_the_seed_only(model, request):
    import torch

    folder = str(request.getfixturevalue(model))
    torch.manual_seed(1)
    first = _head(load_classifier(folder, LABELS, head_seed=7)[0])
    torch.manual_seed(2)
    state = torch.random.get_rng_state()
    second = _head(load_classifier(folder, LABELS, head_seed=7)[0])
    assert torch.equal(torch.random.get_rng_state(), state), "loading moved the caller's random state"
    other = _head(load_classifier(folder, LABELS, head_seed=8)[0])
    assert first and first.keys() == second.keys() == other.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_two_runs_of_one_seed_train_the_same(tiny_causal_lm, tmp_path):
    """The whole classifier run: the same losses whatever ran before it; another seed starts elsewhere."""
    import torch

    from aicd.components.training.adapter import train_adapter

    data = make_dataset(tmp_path / "ds", review_rows(), task="text-classification")

    def run(name: str, seed: int, disturb: int):
        torch.manual_seed(disturb)
        spec = classification_spec(tiny_causal_lm, tmp_path / f"ck-{name}", max_steps=2, methods=[LORA],
                                   learning_rate=0.005, seed=seed)
        return train_adapter(spec, data, "lora", tmp_path / name, progress=False)

    first, second, other = run("a", 5, 11), run("b", 5, 12), run("c", 6, 11)
    assert first.losses == second.losses
    assert other.first_loss != first.first_loss
