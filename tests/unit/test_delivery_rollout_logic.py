"""The canary verdict (relative to stable), the decision it implies, and the counters read back from Git trailers."""

import pytest

from aicd.components.delivery import isvc
from aicd.components.delivery.analysis import Interval, Observation, judge
from aicd.components.delivery.canary import Progress, _decide, progress, revisions_since_traffic
from aicd.components.delivery.readiness import argocd_status, isvc_status
from aicd.components.spec import CanarySpec, DeliverySpec

C = CanarySpec(min_requests=10, max_error_rate=0.02, max_client_error_rate=0.05, max_latency_ratio=1.5,
               min_traffic_share=0.25, max_failed_intervals=2, max_inconclusive_intervals=3)
STABLE = Observation(1.0, 100, server_errors=1, client_errors=2, p95_s=0.1)


@pytest.mark.parametrize("canary, traffic, decision, reason", [
    (Observation(1.0, 50, 1, 1, 0.11), 50, "pass", "5xx ratio 2.000% vs stable 1.000% (max +2.000%)"),
    (Observation(1.0, 50, 3, 0, 0.11), 50, "fail", "5xx ratio 6.000% vs stable 1.000% (max +2.000%)"),
    (Observation(1.0, 50, 0, 5, 0.11), 50, "fail", "4xx ratio 10.000% vs stable 2.000% (max +5.000%)"),
    (Observation(1.0, 50, 0, 0, 0.2), 50, "fail", "p95 latency 200.0 ms = 2.00x stable (max 1.5x)"),
    (Observation(1.0, 5), 10, "inconclusive", "canary served 5 requests, fewer than delivery.canary.min_requests=10"),
    (Observation(1.0, 2), 50, "fail", "canary answered 2 requests, expected about 51 at 50% of 102"),
    (Observation(0.0), 50, "down", "the canary predictor is down (not scraped) while the stable one is up"),
    (Observation(None), 50, "down", "the canary predictor is absent (not scraped) while the stable one is up"),
])
def test_judge_is_relative_to_stable(canary, traffic, decision, reason):
    got, reasons = judge(canary, STABLE, C, traffic)
    assert got == decision
    assert any(r.startswith(reason) for r in reasons), reasons


def test_a_stable_model_that_errs_as_much_does_not_fail_the_canary():
    noisy = Observation(1.0, 100, server_errors=30, client_errors=40, p95_s=0.1)
    assert judge(Observation(1.0, 50, 15, 20, 0.1), noisy, C, 50)[0] == "pass"


@pytest.mark.parametrize("decision, before, traffic, action", [
    ("pass", Progress(), 10, "step"),
    ("pass", Progress(), 100, "promote"),
    ("fail", Progress(1, 0, 0), 10, "wait"),
    ("fail", Progress(2, 1, 0), 10, "rollback"),
    ("down", Progress(), 10, "rollback"),
    ("not-ready", Progress(), 10, "rollback"),
    ("inconclusive", Progress(2, 0, 1), 10, "wait"),
    ("inconclusive", Progress(3, 0, 2), 10, "rollback"),
])
def test_decisions(decision, before, traffic, action):
    delivery = DeliverySpec(gitops={"repo": "/x"}, canary=C.model_copy(update={"steps": [10, 50, 100]}))
    got, _, counters = _decide(delivery, Interval(decision, 0.0), traffic, before)
    assert got == action
    assert counters.interval == before.interval + 1


def test_inconclusive_policy_promote():
    delivery = DeliverySpec(gitops={"repo": "/x"}, canary=C.model_copy(update={"inconclusive_policy": "promote"}))
    assert _decide(delivery, Interval("inconclusive", 0.0), 10, Progress(3, 0, 2))[0] == "promote"


def test_counters_resume_from_the_newest_trailers_of_this_canary_only():
    history = [("c4", {"Aicd-Model-Id": "m2", "Aicd-Canary-Interval": "1", "Aicd-Canary-Failed": "1"}),
               ("c3", {"Aicd-Model-Id": "m1", "Aicd-Canary-Decision": "wait", "Aicd-Canary-Interval": "3",
                       "Aicd-Canary-Failed": "1", "Aicd-Canary-Inconclusive": "2"}),
               ("c2", {"Aicd-Model-Id": "m1", "Aicd-Canary-Decision": "step", "Aicd-Canary-Interval": "1"}),
               ("c1", {"Aicd-Model-Id": "m1", "Aicd-Expected-Champion": "none"})]
    assert progress(history, "m1") == Progress(3, 1, 2)
    assert progress(history, "m3") == Progress()
    assert progress(history[3:], "m1") == Progress()          # only the promotion: a fresh analysis
    assert revisions_since_traffic(history) == {"c4", "c3", "c2"}


def test_argocd_status():
    app = {"status": {"sync": {"status": "Synced", "revision": "abc"}, "health": {"status": "Healthy"}}}
    assert argocd_status(app, {"abc"})[0] is True
    assert argocd_status(app, {"def"})[0] is None
    app["status"]["health"]["status"] = "Degraded"
    assert argocd_status(app, {"abc"})[0] is False
    assert argocd_status(None, {"abc"})[0] is None


def test_isvc_status_crash_loop_ends_the_wait():
    obj = {"metadata": {"generation": 2}, "spec": {"predictor": {}},
           "status": {"observedGeneration": 2, "conditions": [
               {"type": "Ready", "status": "False", "reason": "CrashLoopBackOff", "message": "back-off"}]}}
    declared = isvc.state(obj)
    ok, reason = isvc_status(obj, declared)
    assert ok is False and "CrashLoopBackOff" in reason
