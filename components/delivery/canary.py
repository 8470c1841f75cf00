"""The rollout of a canary (docs/design.md section 6.3): wait until live, let Prometheus judge, let Git record.

Each interval first waits until the commit that set the canary's traffic is live and Ready
(:mod:`readiness`; a canary not Ready by ``delivery.sync.timeout_seconds`` is rolled back),
then judges canary against stable over the window (:mod:`analysis`) and commits what that
implies: a pass steps the traffic to the next of ``delivery.canary.steps`` (passing at 100 %
promotes the canary to champion); a canary that is down rolls back at once;
``max_failed_intervals`` failures roll it back; ``max_inconclusive_intervals`` intervals with
too little traffic end the rollout by ``inconclusive_policy``. Every other interval is an
empty commit: its message is the evidence and its trailers the loop's counters
(``Aicd-Canary-Interval``, ``-Failed``, ``-Inconclusive``), so a retried step, or `aicd canary`
started on another machine, resumes where the analysis was. Nothing is kept in memory.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from aicd.components.delivery import isvc
from aicd.components.delivery.analysis import Interval, analyse_interval
from aicd.components.delivery.gitops import (
    CommitResult,
    StaleChange,
    Superseded,
    commit_overlay,
    read_history,
    read_rollout,
)
from aicd.components.delivery.readiness import wait_live
from aicd.components.errors import DeliveryError
from aicd.components.spec import DeliverySpec

log = logging.getLogger(__name__)
MODEL = "Aicd-Model-Id"
DECISION = "Aicd-Canary-Decision"
PROMOTED = "Aicd-Expected-Champion"  # the trailer only promotion commits carry
DECIDED = ("promote", "rollback")


@dataclass(frozen=True)
class Progress:
    """The analysis counters of one canary, as the GitOps branch's trailers record them."""

    interval: int = 0
    failed: int = 0
    inconclusive: int = 0


@dataclass(frozen=True)
class CanaryStep:
    interval: Interval
    action: str                            # step, promote, rollback, wait
    traffic: int | None
    commit: str | None
    failed: int
    inconclusive: int = 0
    number: int = 0
    analysed_at: int | None = None         # the canary's traffic while it was analysed


def here(trailers: dict[str, str], path: str) -> bool:
    """Whether a commit's trailers are about the overlay at ``path`` (commits without Aicd-Path: any)."""
    return trailers.get("Aicd-Path", path) == path


def progress(history: list[tuple[str, dict[str, str]]], canary_id: str, path: str = "") -> Progress:
    """The counters of ``canary_id``'s analysis in the overlay at ``path`` since it was last promoted there."""
    for _, trailers in history:
        if trailers.get(MODEL) != canary_id or (path and not here(trailers, path)):
            continue
        if "Aicd-Canary-Interval" in trailers:
            return Progress(int(trailers["Aicd-Canary-Interval"]), int(trailers.get("Aicd-Canary-Failed", 0)),
                            int(trailers.get("Aicd-Canary-Inconclusive", 0)))
        if "Aicd-Expected-Champion" in trailers:        # the promotion commit: a fresh analysis
            break
    return Progress()


def revisions_since_traffic(history: list[tuple[str, dict[str, str]]]) -> set[str]:
    """The commits at which the canary's current traffic is live: the last traffic change and any later."""
    found = set()
    for commit, trailers in history:
        found.add(commit)
        if trailers.get(DECISION) in ("step", *DECIDED) or "Aicd-Expected-Champion" in trailers:
            break
    return found


def _guarded(canary_id: str, traffic: int | None, change: Callable[[dict[str, Any]], None] | None, action: str):
    """An overlay edit that applies only while Git still holds this canary at this traffic."""
    def edit(doc: dict[str, Any], current: isvc.RolloutState) -> str:
        if current.canary != canary_id or current.traffic != traffic:
            raise StaleChange(f"the canary in Git changed while it was analysed: expected {canary_id} at {traffic}%, "
                              f"found {current.canary or 'none'} at {current.traffic}%",
                              "analyse the canary that is in Git now")
        if change:
            change(doc)
        return action
    return edit


def _message(delivery: DeliverySpec, canary_id: str, title: str, action: str, interval: Interval,
             counters: Progress, traffic: int | None) -> str:
    lines = [f"aicd: canary {canary_id.removeprefix('sha256:')[:12]} {title}", "", f"Canary: {canary_id}",
             f"Analysis ({delivery.canary.interval_seconds:g}s window, traffic {traffic}%): {interval.decision}"]
    lines += [f"  {r}" for r in interval.reasons]
    lines += [f"  requests: canary {interval.requests:.0f}, stable {interval.stable_requests:.0f}", "",
              f"{MODEL}: {canary_id}", f"Aicd-Path: {delivery.gitops.path}", f"{DECISION}: {action}",
              f"Aicd-Canary-Traffic: {traffic}",
              f"Aicd-Canary-Interval: {counters.interval}", f"Aicd-Canary-Failed: {counters.failed}",
              f"Aicd-Canary-Inconclusive: {counters.inconclusive}"]
    return "\n".join(lines) + "\n"


def _decide(delivery: DeliverySpec, interval: Interval, traffic: int | None, before: Progress):
    """(action, title, counters after this interval) for an interval's verdict."""
    c = delivery.canary
    counters = Progress(before.interval + 1, before.failed + (interval.decision == "fail"),
                        before.inconclusive + (interval.decision == "inconclusive"))
    if interval.decision == "pass":
        later = [s for s in c.steps if traffic is None or s > traffic]
        return ("step", f"step {traffic}% -> {later[0]}%", counters) if later else \
            ("promote", "promote to champion", counters)
    if interval.decision in ("down", "not-ready"):
        return "rollback", f"rollback ({interval.decision})", counters
    if interval.decision == "fail" and counters.failed >= c.max_failed_intervals:
        return "rollback", "rollback", counters
    if interval.decision == "inconclusive" and counters.inconclusive >= c.max_inconclusive_intervals:
        action = c.inconclusive_policy
        return action, f"{action} (inconclusive {counters.inconclusive} times, policy)", counters
    return "wait", f"interval {counters.interval}: {interval.decision}", counters


def commit_interval(delivery: DeliverySpec, state: isvc.RolloutState, interval: Interval,
                    before: Progress) -> CanaryStep:
    """Commit what one judged interval implies (a step, the decision, or only the evidence)."""
    traffic = state.traffic
    action, title, counters = _decide(delivery, interval, traffic, before)
    change = {"promote": isvc.promote_canary, "rollback": isvc.rollback_canary}.get(action)
    if action == "step":
        nxt = [s for s in delivery.canary.steps if traffic is None or s > traffic][0]
        change, traffic = (lambda d: isvc.set_traffic(d, nxt)), nxt
    message = _message(delivery, state.canary, title, action, interval, counters, traffic)
    result: CommitResult = commit_overlay(delivery, _guarded(state.canary, state.traffic, change, action), message,
                                          record=True)
    log.info("canary %s: %s -> %s (%s)", state.canary, interval.decision, action, "; ".join(interval.reasons))
    return CanaryStep(interval, action, traffic, result.commit, counters.failed, counters.inconclusive,
                      counters.interval, state.traffic)


def analyse_canary(delivery: DeliverySpec, prometheus_url: str | None = None,
                   window_seconds: float | None = None) -> CanaryStep:
    """One interval of the canary in Git: resume its counters from Git, judge, commit."""
    state = read_rollout(delivery)
    if state.canary is None:
        raise DeliveryError(f"no canary is declared in {delivery.gitops.path}", "promote an adapter first")
    before = progress(read_history(delivery), state.canary, delivery.gitops.path)
    interval = analyse_interval(delivery, state.traffic, prometheus_url, window_seconds)
    return commit_interval(delivery, state, interval, before)


def _settled(delivery: DeliverySpec, model_id: str | None, state: isvc.RolloutState) -> CanaryStep | None:
    """The decision Git already holds for ``model_id`` (a retried step after the decision), or None."""
    if model_id is None or state.canary == model_id:
        return None
    history = read_history(delivery)
    for commit, trailers in history:
        if trailers.get(MODEL) == model_id and trailers.get(DECISION) in DECIDED and \
                here(trailers, delivery.gitops.path):
            return CanaryStep(Interval("settled", 0.0, reasons=[f"decided before by {commit[:12]}"]),
                              trailers[DECISION], None, commit, int(trailers.get("Aicd-Canary-Failed", 0)))
    if state.champion == model_id:
        return CanaryStep(Interval("settled", 0.0, reasons=["the first champion: nothing to roll out"]),
                          "champion", None, None, 0)
    if delivery.gitops.mode == "pull-request":
        waiting = f"{model_id} is not in {delivery.gitops.branch} yet: its pull request awaits review"
        return CanaryStep(Interval("settled", 0.0, reasons=[waiting + "; run the rollout after the merge"]),
                          "awaiting-merge", None, None, 0)
    superseded_by(delivery, history, model_id)
    raise StaleChange(f"Git declares canary {state.canary or 'none'}, not {model_id}, and holds no decision for it",
                      "roll out the canary that is in Git now (or promote this model again)")


def superseded_by(delivery: DeliverySpec, history: list[tuple[str, dict[str, str]]], model_id: str) -> None:
    """Raise :class:`Superseded` when a later promotion replaced ``model_id``'s canary before its rollout
    decided (``history`` newest first): the caller is told which model replaced it, and in which commit."""
    promotions = [(commit, t) for commit, t in history
                  if PROMOTED in t and t.get(MODEL) and here(t, delivery.gitops.path)]
    mine = next((k for k, (_, t) in enumerate(promotions) if t[MODEL] == model_id), None)
    if mine is None or mine == 0:
        return
    commit, trailers = promotions[mine - 1]  # the next promotion after this model's own
    raise Superseded(model_id, trailers[MODEL], commit,
                     f"roll out {trailers[MODEL]} (the canary in Git now); to deliver {model_id} instead, gate it "
                     "again against the current champion and promote it again")


def run_canary(delivery: DeliverySpec, prometheus_url: str | None = None, max_intervals: int | None = None,
               sleep: Callable[[float], None] = time.sleep, on_step: Callable[[CanaryStep], None] | None = None,
               model_id: str | None = None) -> CanaryStep:
    """The rollout loop (the `rollout` pipeline's step and `aicd canary`): until promoted or rolled back.

    ``model_id``: the canary this rollout is about (a retried step whose decision Git already
    holds returns it). Stops after ``max_intervals`` intervals, returning the last, undecided step.
    """
    count = 0
    while True:
        state = read_rollout(delivery)
        done = _settled(delivery, model_id, state)
        if done is None and state.canary is None:
            raise DeliveryError(f"no canary is declared in {delivery.gitops.path}", "promote an adapter first")
        if done is None:
            history = read_history(delivery)
            live = wait_live(delivery, state, revisions_since_traffic(history), sleep)
            if live.ready:
                sleep(delivery.canary.interval_seconds)
                done = analyse_canary(delivery, prometheus_url)
            else:
                done = commit_interval(delivery, state, Interval("not-ready", 0.0, reasons=[live.reason]),
                                       progress(history, state.canary, delivery.gitops.path))
        count += 1
        if on_step:
            on_step(done)
        if done.action not in ("step", "wait") or (max_intervals and count >= max_intervals):
            return done


def roll_out(delivery: DeliverySpec, model_id: str | None = None, prometheus_url: str | None = None,
             max_intervals: int | None = None,
             sleep: Callable[[float], None] = time.sleep) -> tuple[list[CanaryStep], CanaryStep | None]:
    """Drive the canary in Git (``model_id``'s, when given) to its end: (every interval, the last).

    (``[]``, None) when there is nothing to roll out: no model id and no canary in Git.
    """
    if not model_id and read_rollout(delivery).canary is None:
        log.info("no canary in %s: nothing to roll out", delivery.gitops.path)
        return [], None
    steps: list[CanaryStep] = []
    final = run_canary(delivery, prometheus_url, max_intervals, sleep, steps.append, model_id or None)
    return steps, final


def step_dict(step: CanaryStep) -> dict[str, Any]:
    return asdict(step)
