"""Canary analysis (docs/design.md section 6.3): Prometheus decides, Git records.

Each interval compares the canary with the stable predictor over the predictor's
metrics (docs/contracts.md): error rate, p95 latency and feedback score. Series are
selected by the ``role`` (stable | canary) and ``isvc`` labels that the monitoring
component's relabelling adds. A passing interval steps the traffic to the next of
``delivery.canary.steps`` (one commit); passing at 100 % promotes the canary to
champion; ``max_failed_intervals`` failures roll it back. Too little canary traffic
is inconclusive: nothing changes. Prometheus down or without data raises
:class:`DeliveryError` before any commit.
"""

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import requests

from aicd.components.delivery import isvc
from aicd.components.delivery.gitops import CommitResult, StaleChange, commit_overlay, read_rollout
from aicd.components.errors import DeliveryError
from aicd.components.spec import Spec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Interval:
    """The evidence and decision of one analysis interval."""

    decision: str                          # pass | fail | inconclusive
    requests: float
    error_rate: float | None = None
    stable_error_rate: float | None = None
    latency_p95_s: float | None = None
    stable_latency_p95_s: float | None = None
    feedback_score: float | None = None
    reasons: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CanaryStep:
    interval: Interval
    action: str                            # step, promote, rollback, wait
    traffic: int | None
    commit: str | None
    failed: int


def query(prometheus_url: str, promql: str) -> list[dict[str, Any]]:
    """An instant query; the result vector. Unreachable or refusing Prometheus is a DeliveryError."""
    url = prometheus_url.rstrip("/") + "/api/v1/query"
    try:
        resp = requests.get(url, params={"query": promql}, timeout=10)
    except requests.RequestException as err:
        raise DeliveryError(f"Prometheus at {prometheus_url} is unreachable ({type(err).__name__})",
                            "check `delivery.prometheus_url` and that Prometheus is running") from None
    try:
        body = resp.json()
    except ValueError:
        body = {}
    if resp.status_code != 200 or body.get("status") != "success":
        raise DeliveryError(f"Prometheus refused the query {promql!r}: HTTP {resp.status_code} "
                            f"{body.get('errorType', '')} {body.get('error', resp.text[:200])}".rstrip(),
                            "check `delivery.prometheus_url` points at the Prometheus HTTP API")
    return body["data"]["result"]


def scalar(prometheus_url: str, promql: str) -> float | None:
    """The single value of an aggregated query; None when there is no sample (or NaN)."""
    result = query(prometheus_url, promql)
    if not result:
        return None
    value = float(result[0]["value"][1])
    return None if math.isnan(value) else value


def _queries(name: str, role: str, window: str) -> dict[str, str]:
    sel = f'isvc="{name}",role="{role}"'
    return {
        "up": f"max(up{{{sel}}})",
        "requests": f"sum(increase(aicd_requests_total{{{sel}}}[{window}]))",
        "errors": f'sum(increase(aicd_requests_total{{{sel},code=~"5.."}}[{window}]))',
        "p95": f"histogram_quantile(0.95, sum by (le) (rate(aicd_request_duration_seconds_bucket{{{sel}}}[{window}])))",
        "up_votes": f'sum(increase(aicd_feedback_total{{{sel},rating="up"}}[{window}]))',
        "votes": f"sum(increase(aicd_feedback_total{{{sel}}}[{window}]))",
    }


def _observe(spec: Spec, url: str, role: str, window: str) -> dict[str, float | None]:
    qs = _queries(spec.delivery.serving.name, role, window)
    up = scalar(url, qs["up"])
    if up is None or up < 1:
        raise DeliveryError(f"Prometheus at {url} has no data for the {role} predictor of "
                            f"{spec.delivery.serving.name!r} ({qs['up']} is {'absent' if up is None else 'down'})",
                            "check that the predictor is scraped with the `isvc` and `role` labels "
                            "(manifests/components/monitoring)")
    requests_n = scalar(url, qs["requests"]) or 0.0
    errors = scalar(url, qs["errors"]) or 0.0
    votes = scalar(url, qs["votes"]) or 0.0
    return {"requests": requests_n, "error_rate": errors / requests_n if requests_n else None,
            "p95": scalar(url, qs["p95"]) if requests_n else None,
            "feedback": (scalar(url, qs["up_votes"]) or 0.0) / votes if votes else None}


def analyse_interval(spec: Spec, prometheus_url: str | None = None, window_seconds: float | None = None) -> Interval:
    """Decide one interval from Prometheus: pass, fail, or inconclusive (too little canary traffic)."""
    c = spec.delivery.canary
    url = prometheus_url or spec.delivery.prometheus_url
    window = f"{max(1, round(window_seconds or c.interval_seconds))}s"
    canary, stable = _observe(spec, url, "canary", window), _observe(spec, url, "stable", window)
    evidence = {"requests": canary["requests"], "error_rate": canary["error_rate"],
                "stable_error_rate": stable["error_rate"], "latency_p95_s": canary["p95"],
                "stable_latency_p95_s": stable["p95"], "feedback_score": canary["feedback"]}
    if canary["requests"] < c.min_requests:
        return Interval("inconclusive", reasons=[f"canary served {canary['requests']:.0f} requests, fewer than "
                                                 f"delivery.canary.min_requests={c.min_requests}"], **evidence)
    failures, notes = [], []
    rate = canary["error_rate"] or 0.0
    (failures if rate > c.max_error_rate else notes).append(
        f"error rate {rate:.3%} (max {c.max_error_rate:.3%}; stable {stable['error_rate'] or 0.0:.3%})")
    if canary["p95"] is not None and stable["p95"]:
        ratio = canary["p95"] / stable["p95"]
        (failures if ratio > c.max_latency_ratio else notes).append(
            f"p95 latency {canary['p95'] * 1000:.1f} ms = {ratio:.2f}x stable (max {c.max_latency_ratio:g}x)")
    if c.min_feedback_score is not None and canary["feedback"] is not None:
        (failures if canary["feedback"] < c.min_feedback_score else notes).append(
            f"feedback score {canary['feedback']:.2f} (min {c.min_feedback_score:g})")
    return Interval("fail" if failures else "pass", reasons=failures or notes, **evidence)


def _guarded(canary_id: str, traffic: int | None, change: Callable[[dict[str, Any]], None], action: str):
    """An overlay edit that applies only while Git still holds this canary at this traffic."""
    def edit(doc: dict[str, Any], current: isvc.RolloutState) -> str:
        if current.canary != canary_id or current.traffic != traffic:
            raise StaleChange(f"the canary in Git changed while it was analysed: expected {canary_id} at {traffic}%, "
                              f"found {current.canary or 'none'} at {current.traffic}%",
                              "analyse the canary that is in Git now")
        change(doc)
        return action
    return edit


def _message(spec: Spec, canary_id: str, title: str, interval: Interval) -> str:
    lines = [f"aicd: canary {canary_id.removeprefix('sha256:')[:12]} {title}", "", f"Canary: {canary_id}",
             f"Analysis ({spec.delivery.canary.interval_seconds:g}s window): {interval.decision}"]
    lines += [f"  {r}" for r in interval.reasons] + [f"  requests: {interval.requests:.0f}"]
    return "\n".join(lines + ["", f"Aicd-Model-Id: {canary_id}", f"Aicd-Canary-Decision: {title.split()[0]}"]) + "\n"


def analyse_canary(spec: Spec, prometheus_url: str | None = None, failed_before: int = 0,
                   window_seconds: float | None = None) -> CanaryStep:
    """One interval: analyse, then commit the step, promotion or rollback it implies (or nothing)."""
    state = read_rollout(spec)
    if state.canary is None:
        raise DeliveryError(f"no canary is declared in {spec.delivery.gitops.path}", "promote an adapter first")
    interval = analyse_interval(spec, prometheus_url, window_seconds)
    steps, traffic, failed = spec.delivery.canary.steps, state.traffic, failed_before
    result: CommitResult | None = None
    if interval.decision == "pass":
        later = [s for s in steps if traffic is None or s > traffic]
        if later:
            nxt = later[0]
            result = commit_overlay(spec, _guarded(state.canary, traffic, lambda d: isvc.set_traffic(d, nxt), "step"),
                                    _message(spec, state.canary, f"step {traffic}% -> {nxt}%", interval))
            traffic = nxt
        else:
            result = commit_overlay(spec, _guarded(state.canary, traffic, isvc.promote_canary, "promote"),
                                    _message(spec, state.canary, "promote to champion", interval))
    elif interval.decision == "fail":
        failed += 1
        if failed >= spec.delivery.canary.max_failed_intervals:
            result = commit_overlay(spec, _guarded(state.canary, traffic, isvc.rollback_canary, "rollback"),
                                    _message(spec, state.canary, "rollback", interval))
    action = result.action if result else "wait"
    log.info("canary %s: %s -> %s (%s)", state.canary, interval.decision, action, "; ".join(interval.reasons))
    return CanaryStep(interval, action, traffic, result.commit if result else None, failed)


def run_canary(spec: Spec, prometheus_url: str | None = None, max_intervals: int | None = None,
               sleep: Callable[[float], None] = time.sleep,
               on_step: Callable[[CanaryStep], None] | None = None) -> CanaryStep:
    """The `aicd canary` loop: wait an interval, analyse, commit; until promoted or rolled back.

    Stops after ``max_intervals`` intervals (returning the last, undecided step) when given.
    """
    failed, count = 0, 0
    while True:
        sleep(spec.delivery.canary.interval_seconds)
        step = analyse_canary(spec, prometheus_url, failed)
        failed, count = step.failed, count + 1
        if on_step:
            on_step(step)
        if step.action in ("promote", "rollback") or (max_intervals and count >= max_intervals):
            return step


def step_dict(step: CanaryStep) -> dict[str, Any]:
    return asdict(step)
