"""One canary analysis interval: what Prometheus says about canary and stable, and the verdict.

Series are selected by the ``role`` (stable | canary) and ``isvc`` labels that the monitoring
component's relabelling adds to the predictor's metrics (docs/contracts.md). Every figure of
the canary is judged against the stable model in the same window: its 5xx and 4xx ratios may
exceed the stable model's by at most ``max_error_rate`` / ``max_client_error_rate``, its p95
latency may be at most ``max_latency_ratio`` times the stable one. Verdicts:

- ``down``: the stable predictor is scraped but the canary is not (crashed, crash-looping or
  hanging so hard it no longer answers its metrics): the rollout rolls back at once;
- ``fail``: a threshold broken, or the canary answered far fewer requests than its traffic
  share implies (``min_traffic_share``; a hanging canary answers none);
- ``inconclusive``: too little canary traffic to judge (``min_requests``);
- ``pass``.

Prometheus unreachable, refusing the query, or without data for either predictor raises
:class:`DeliveryError` (a monitoring problem, not the canary's): nothing is committed.
"""

import math
from dataclasses import dataclass, field
from typing import Any

import requests

from aicd.components.errors import DeliveryError
from aicd.components.spec import CanarySpec, DeliverySpec


@dataclass(frozen=True)
class Observation:
    """One predictor's figures over the window."""

    up: float | None
    requests: float = 0.0
    server_errors: float = 0.0
    client_errors: float = 0.0
    p95_s: float | None = None
    feedback: float | None = None

    def ratio(self, count: float) -> float:
        return count / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Interval:
    """The evidence and verdict of one analysis interval."""

    decision: str                          # pass | fail | inconclusive | down
    requests: float
    stable_requests: float = 0.0
    error_rate: float | None = None        # 5xx ratio
    stable_error_rate: float | None = None
    client_error_rate: float | None = None  # 4xx ratio
    stable_client_error_rate: float | None = None
    latency_p95_s: float | None = None
    stable_latency_p95_s: float | None = None
    feedback_score: float | None = None
    reasons: list[str] = field(default_factory=list)
    queries: dict[str, str] = field(default_factory=dict)


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


def queries(name: str, role: str, window: str) -> dict[str, str]:
    """The PromQL of one predictor's figures (kept in the evidence)."""
    sel = f'isvc="{name}",role="{role}"'
    return {
        "up": f"max(up{{{sel}}})",
        "requests": f"sum(increase(aicd_requests_total{{{sel}}}[{window}]))",
        "server_errors": f'sum(increase(aicd_requests_total{{{sel},code=~"5.."}}[{window}]))',
        "client_errors": f'sum(increase(aicd_requests_total{{{sel},code=~"4.."}}[{window}]))',
        "p95": f"histogram_quantile(0.95, sum by (le) (rate(aicd_request_duration_seconds_bucket{{{sel}}}[{window}])))",
        "up_votes": f'sum(increase(aicd_feedback_total{{{sel},rating="up"}}[{window}]))',
        "votes": f"sum(increase(aicd_feedback_total{{{sel}}}[{window}]))",
    }


def observe(url: str, qs: dict[str, str]) -> Observation:
    up = scalar(url, qs["up"])
    if up is None or up < 1:
        return Observation(up)
    n = scalar(url, qs["requests"]) or 0.0
    votes = scalar(url, qs["votes"]) or 0.0
    return Observation(up, n, scalar(url, qs["server_errors"]) or 0.0, scalar(url, qs["client_errors"]) or 0.0,
                       scalar(url, qs["p95"]) if n else None,
                       (scalar(url, qs["up_votes"]) or 0.0) / votes if votes else None)


def _relative(failures: list[str], notes: list[str], what: str, canary: float, stable: float, margin: float) -> None:
    text = f"{what} {canary:.3%} vs stable {stable:.3%} (max +{margin:.3%})"
    (failures if canary - stable > margin else notes).append(text)


def judge(canary: Observation, stable: Observation, c: CanarySpec, traffic: int | None) -> tuple[str, list[str]]:
    """The verdict of one interval and its reasons (pure: the figures in, the decision out)."""
    if canary.up is None or canary.up < 1:
        state = "absent" if canary.up is None else "down"
        return "down", [f"the canary predictor is {state} (not scraped) while the stable one is up: "
                        "crashed, crash-looping or hanging"]
    total = canary.requests + stable.requests
    expected = total * (traffic or 0) / 100
    if expected >= c.min_requests and canary.requests < expected * c.min_traffic_share:
        return "fail", [f"canary answered {canary.requests:.0f} requests, expected about {expected:.0f} at "
                        f"{traffic}% of {total:.0f} (min share {c.min_traffic_share:g}): hanging or not "
                        "receiving its traffic"]
    if canary.requests < c.min_requests:
        return "inconclusive", [f"canary served {canary.requests:.0f} requests, fewer than "
                                f"delivery.canary.min_requests={c.min_requests}"]
    failures: list[str] = []
    notes: list[str] = []
    _relative(failures, notes, "5xx ratio", canary.ratio(canary.server_errors), stable.ratio(stable.server_errors),
              c.max_error_rate)
    _relative(failures, notes, "4xx ratio", canary.ratio(canary.client_errors), stable.ratio(stable.client_errors),
              c.max_client_error_rate)
    if canary.p95_s is not None and stable.p95_s:
        ratio = canary.p95_s / stable.p95_s
        (failures if ratio > c.max_latency_ratio else notes).append(
            f"p95 latency {canary.p95_s * 1000:.1f} ms = {ratio:.2f}x stable (max {c.max_latency_ratio:g}x)")
    if c.min_feedback_score is not None and canary.feedback is not None:
        (failures if canary.feedback < c.min_feedback_score else notes).append(
            f"feedback score {canary.feedback:.2f} (min {c.min_feedback_score:g})")
    return ("fail" if failures else "pass"), failures or notes


def analyse_interval(delivery: DeliverySpec, traffic: int | None, prometheus_url: str | None = None,
                     window_seconds: float | None = None) -> Interval:
    """Read both predictors' figures over the last window from Prometheus and judge the canary."""
    c = delivery.canary
    url = prometheus_url or delivery.prometheus_url
    window = f"{max(1, round(window_seconds or c.interval_seconds))}s"
    name = delivery.serving.name
    qs = {role: queries(name, role, window) for role in ("canary", "stable")}
    canary, stable = observe(url, qs["canary"]), observe(url, qs["stable"])
    if stable.up is None or stable.up < 1:
        which = "the stable and canary predictors" if canary.up is None else "the stable predictor"
        raise DeliveryError(f"Prometheus at {url} has no data for {which} of {name!r} "
                            f"({qs['stable']['up']} is {'absent' if stable.up is None else 'down'})",
                            "check that the predictors are scraped with the `isvc` and `role` labels "
                            "(manifests/components/monitoring)")
    decision, reasons = judge(canary, stable, c, traffic)
    return Interval(decision, canary.requests, stable.requests,
                    canary.ratio(canary.server_errors) if canary.requests else None,
                    stable.ratio(stable.server_errors) if stable.requests else None,
                    canary.ratio(canary.client_errors) if canary.requests else None,
                    stable.ratio(stable.client_errors) if stable.requests else None,
                    canary.p95_s, stable.p95_s, canary.feedback, reasons,
                    {f"{role}.{k}": v for role, q in qs.items() for k, v in q.items()})
