"""The rollout's decision and its evidence as Markdown (the KFP UI renders a Markdown artifact)."""

from collections.abc import Iterable

from aicd.components.delivery.canary import CanaryStep
from aicd.components.spec import DeliverySpec


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f} ms"


def render(delivery: DeliverySpec, steps: Iterable[CanaryStep], final: CanaryStep | None, stages=(),
           action: str | None = None) -> str:
    """Decision, thresholds, one row per interval (figures, verdict, commit), the stages and the PromQL used."""
    c = delivery.canary
    steps = list(steps)
    action = action or (final.action if final else "none")
    if action == "external":
        return "# Rollout: external\n\n`delivery.rollout` is `external`: run the rollout pipeline or `aicd canary`.\n"
    lines = [f"# Rollout of `{delivery.serving.name}`: **{action}**", "",
             f"GitOps: `{delivery.gitops.repo}` branch `{delivery.gitops.branch}`, `{delivery.gitops.path}`; "
             f"sync: `{delivery.sync.via}`; Prometheus: `{delivery.prometheus_url}`", "",
             "## Thresholds (canary relative to stable, same window)", "",
             f"- 5xx ratio at most stable + {c.max_error_rate:.2%}; 4xx ratio at most stable + "
             f"{c.max_client_error_rate:.2%}",
             f"- p95 latency at most {c.max_latency_ratio:g}x stable; feedback score at least "
             f"{'-' if c.min_feedback_score is None else c.min_feedback_score}",
             f"- at least {c.min_requests} requests, and {c.min_traffic_share:.0%} of the traffic share; "
             f"{c.max_failed_intervals} failed interval(s) roll back; {c.max_inconclusive_intervals} inconclusive "
             f"end by `{c.inconclusive_policy}`",
             f"- steps {c.steps}, interval {c.interval_seconds:g}s, live and Ready within "
             f"{delivery.sync.timeout_seconds:g}s", "", "## Intervals", "",
             "| # | traffic analysed | verdict | action | canary req | stable req | 5xx canary/stable "
             "| 4xx canary/stable | p95 canary/stable | feedback | reasons | commit |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in steps:
        i = s.interval
        lines.append(f"| {s.number} | {s.analysed_at}% | {i.decision} | {s.action} | {i.requests:.0f} | "
                     f"{i.stable_requests:.0f} | {_pct(i.error_rate)} / {_pct(i.stable_error_rate)} | "
                     f"{_pct(i.client_error_rate)} / {_pct(i.stable_client_error_rate)} | "
                     f"{_ms(i.latency_p95_s)} / {_ms(i.stable_latency_p95_s)} | "
                     f"{'-' if i.feedback_score is None else f'{i.feedback_score:.2f}'} | "
                     f"{'; '.join(i.reasons).replace('|', '/')} | {(s.commit or '-')[:12]} |")
    if stages:
        lines += ["", "## Environments", ""] + [
            f"- {s.stage}: {s.status}{' ' + s.commit[:12] if s.commit else ''}"
            f"{' ' + s.pull_request if s.pull_request else ''}{' (' + s.message + ')' if s.message else ''}"
            for s in stages]
    queries = next((s.interval.queries for s in reversed(steps) if s.interval.queries), {})
    if queries:
        lines += ["", "## Queries", ""] + [f"- {name}: `{q}`" for name, q in sorted(queries.items())]
    return "\n".join(lines) + "\n"
