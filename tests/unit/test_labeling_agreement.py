"""Agreement math against hand-computed values, and conflict resolution."""

import random

import pytest

from aicd.components.labeling.agreement import agreement, cohen_kappa, krippendorff_alpha_nominal, resolve


def test_cohen_kappa_hand_computed():
    # 50 items: both yes 20, A yes/B no 5, A no/B yes 10, both no 15.
    # p_o = 35/50 = 0.7; p_e = 0.5*0.6 + 0.5*0.4 = 0.5; kappa = (0.7-0.5)/(1-0.5) = 0.4
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)


def test_cohen_kappa_matches_sklearn():
    from sklearn.metrics import cohen_kappa_score

    rng = random.Random(3)
    a = [rng.choice("abc") for _ in range(200)]
    b = [x if rng.random() < 0.6 else rng.choice("abc") for x in a]
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))


def test_krippendorff_alpha_small_hand_computed():
    # o_aa = 3 (unit 1: 6 ordered pairs of weight 1/2), o_ab = o_ba = 1 (unit 2), o_bb = 3 (unit 3)
    # n_a = n_b = 4, n = 8; D_o = 2/8; D_e = 2*4*4/(8*7) = 32/56; alpha = 1 - 0.25/(32/56) = 0.5625
    ratings = {"u1": {1: "a", 2: "a", 3: "a"}, "u2": {1: "a", 2: "b"}, "u3": {1: "b", 2: "b", 3: "b"}}
    assert krippendorff_alpha_nominal(ratings) == pytest.approx(0.5625)


def test_krippendorff_alpha_published_example():
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability", 4 coders, 12 units with
    # missing values: nominal alpha = 0.743.
    coders = {
        "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
        "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
        "C": [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
        "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
    }
    ratings = {u: {c: vals[u] for c, vals in coders.items() if vals[u] is not None} for u in range(12)}
    assert krippendorff_alpha_nominal(ratings) == pytest.approx(0.743, abs=5e-4)


@pytest.mark.parametrize("ratings", [
    {"u1": {1: "a", 2: "a"}, "u2": {1: "a", 2: "a"}},  # one category only: no variation
    {"u1": {1: "a"}},                                   # nothing paired
])
def test_alpha_undefined_is_none(ratings):
    assert krippendorff_alpha_nominal(ratings) is None


def test_kappa_undefined_is_none():
    assert cohen_kappa(["a", "a"], ["a", "a"]) is None
    assert cohen_kappa([], []) is None


def test_agreement_picks_kappa_for_two_and_alpha_for_more():
    two = {"x": {"ann": "a", "bob": "a"}, "y": {"ann": "a", "bob": "b"}, "z": {"ann": "b", "bob": "b"},
           "w": {"ann": "b"}}
    figures = agreement(two)
    # paired x, y, z: p_o = 2/3; ann a,a,b; bob a,b,b: p_e = (2*1 + 1*2)/9 = 4/9; kappa = (2/3-4/9)/(5/9) = 0.4
    assert figures["method"] == "cohen_kappa"
    assert figures["value"] == pytest.approx(0.4)
    assert figures["annotators"] == 2 and figures["items_with_overlap"] == 3 and figures["items"] == 4
    assert figures["percent_agreement"] == pytest.approx(2 / 3, abs=1e-6)
    three = {"u1": {1: "a", 2: "a", 3: "a"}, "u2": {1: "a", 2: "b"}, "u3": {1: "b", 2: "b", 3: "b"}}
    figures = agreement(three)
    assert figures["method"] == "krippendorff_alpha"
    assert figures["value"] == pytest.approx(0.5625)
    assert figures["cohen_kappa"] is None


@pytest.mark.parametrize("values, mode, truth, expected, needs_person", [
    (["a", "a"], "majority", None, "a", False),
    (["a", "b", "a"], "majority", None, "a", False),
    (["a", "b"], "majority", None, None, True),              # tie
    (["a", "b", "a"], "adjudicate", None, None, True),       # any disagreement
    (["a", "a"], "adjudicate", None, "a", False),
    (["a", "b"], "majority", "b", "b", False),              # ground truth wins
])
def test_resolve(values, mode, truth, expected, needs_person):
    res = resolve(values, mode, truth)
    assert res.value == expected
    assert (res.reason is not None) == needs_person
    if needs_person:
        assert "ground truth" in res.reason and "a: " in res.reason
