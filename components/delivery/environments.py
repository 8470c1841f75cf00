"""Promotion through environments (``delivery.environments``): dev -> staging -> production.

A candidate enters the first stage by the ordinary promotion (its overlay is ``gitops.path``).
Once its rollout there promoted it, :func:`advance` carries the very predictor that stage now
serves (same model, same arguments) into the next stage's overlay: as its champion when it has
none, else as its canary at the first traffic step, and the rollout runs there. Each stage's
state is in the commit trailers (``Aicd-Path``, ``Aicd-Stage``, ``Aicd-Stage-Verified-In``, the
rollout's ``Aicd-Canary-Decision``), so the chain can be audited with `git log` and resumed: a
re-run reads where the candidate is and goes on from there.

A last stage in ``pull-request`` mode gets a pushed branch; with ``delivery.forge`` the pull
(merge) request is opened through the GitHub or GitLab API, otherwise the outcome says so.
"""

import hashlib
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests

from aicd.components.delivery import isvc
from aicd.components.delivery.gitops import StaleChange, commit_overlay, read_history
from aicd.components.errors import DeliveryError
from aicd.components.spec import DeliverySpec, EnvironmentSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageOutcome:
    stage: str            # the stage the candidate is in (or was stopped in)
    status: str           # entered, champion, in-rollout, rolled-back, awaiting-merge, done
    commit: str | None = None
    pull_request: str | None = None
    message: str = ""


def stage_delivery(delivery: DeliverySpec, env: EnvironmentSpec) -> DeliverySpec:
    """The delivery section as seen from one stage: its overlay, its mode, no further stages."""
    gitops = delivery.gitops.model_copy(update={"path": env.path, "mode": env.mode})
    return delivery.model_copy(update={"gitops": gitops, "environments": []})


def stage_status(history: list[tuple[str, dict[str, str]]], env: EnvironmentSpec, model_id: str) -> str:
    """pending, entered (as canary or first champion), promoted or rolled-back (by its rollout there)."""
    for _, t in history:
        if t.get("Aicd-Model-Id") != model_id or t.get("Aicd-Path") != env.path:
            continue
        decision = t.get("Aicd-Canary-Decision")
        if decision in ("promote", "rollback"):
            return "promoted" if decision == "promote" else "rolled-back"
        if "Aicd-Expected-Champion" in t:         # it entered: by the promotion (first stage) or by advance()
            return "entered"
    return "pending"


def _carry(predictor: dict[str, Any], model_id: str, traffic: int, expected: str | None):
    """The edit that puts the verified predictor into the next stage (compare-and-swap on its champion)."""
    def edit(doc: dict[str, Any], current: isvc.RolloutState) -> str:
        if "canaryTrafficPercent" in doc["spec"]["predictor"] or isvc.STABLE_PREDICTOR in (
                doc["metadata"].get("annotations") or {}):
            raise DeliveryError("the environment chain carries Standard-mode InferenceServices only",
                                "set `delivery.serving.deployment_mode: Standard`")
        if model_id in (current.champion, current.canary):
            return "already"
        if current.champion != expected:
            raise StaleChange(f"the stage's champion moved to {current.champion} while {model_id} was verified",
                              "run the chain again")
        if current.champion is None:
            doc["spec"]["predictor"] = {**predictor, "labels": {**predictor.get("labels", {}), isvc.ROLE: "stable"}}
            doc["spec"]["canary"] = []
            return "champion"
        canary = {**predictor, "labels": {**predictor.get("labels", {}), isvc.ROLE: "canary"}}
        doc["spec"]["canary"] = [{"trafficPercent": traffic, "predictor": canary}]
        return "canary"
    return edit


def _champion(delivery: DeliverySpec) -> str | None:
    return commit_overlay(delivery, lambda doc, state: "read", "").before.champion


def _served(delivery: DeliverySpec, model_id: str) -> dict[str, Any]:
    """The predictor of ``model_id`` as the stage ``delivery`` serves it after its promotion."""
    found: list[dict[str, Any]] = []

    def read(doc: dict[str, Any], current: isvc.RolloutState) -> str:
        if current.champion == model_id:
            found.append(doc["spec"]["predictor"])
        return "read"

    commit_overlay(delivery, read, "")
    if not found:
        raise StaleChange(f"{model_id} is not the champion of {delivery.gitops.path}",
                          "it moves on only after its rollout there promoted it")
    return found[0]


def _enter(delivery: DeliverySpec, prev: EnvironmentSpec, env: EnvironmentSpec, model_id: str,
           verified: str) -> StageOutcome:
    here = stage_delivery(delivery, env)
    predictor = _served(stage_delivery(delivery, prev), model_id)
    expected = _champion(here)
    short = model_id[7:19] if model_id.startswith("sha256:") else hashlib.sha256(model_id.encode()).hexdigest()[:12]
    as_what = "champion" if expected is None else "canary"
    message = "\n".join([f"aicd: {short} enters {env.name} ({env.path})", "",
                         f"Verified in {prev.name} by its rollout ({verified[:12]}).", "",
                         f"Aicd-Model-Id: {model_id}", f"Aicd-Path: {env.path}", f"Aicd-Stage: {env.name}",
                         f"Aicd-Stage-Verified-In: {prev.name}@{verified}", f"Aicd-Stage-Entered-As: {as_what}",
                         f"Aicd-Expected-Champion: {expected or 'none'}"]) + "\n"
    branch = f"aicd/{env.name}-{short}" if env.mode == "pull-request" else None
    try:
        result = commit_overlay(here, _carry(predictor, model_id, delivery.canary.steps[0], expected), message,
                                branch)
    except DeliveryError as err:
        if branch and "already exists" in err.message:     # a re-run: its pull request is open already
            return StageOutcome(env.name, "awaiting-merge", message=f"branch {branch} awaits its merge")
        raise
    if branch is None:
        return StageOutcome(env.name, as_what if result.action == "champion" else "entered", result.commit)
    url = open_pull_request(delivery, branch, message.splitlines()[0], message)
    note = (f"pull request {url}" if url else f"branch {branch} pushed; open its pull request into "
            f"{delivery.gitops.branch} (no `delivery.forge` configured)")
    return StageOutcome(env.name, "awaiting-merge", result.commit, url, note)


def advance(delivery: DeliverySpec, model_id: str) -> StageOutcome:
    """Move ``model_id`` one stage on if its current stage promoted it; else say where it stands."""
    envs = delivery.environments
    if not envs:
        raise DeliveryError("`delivery.environments` is empty: there is no chain to advance",
                            "list the stages (overlays), the first being `delivery.gitops.path`")
    history = read_history(delivery, limit=1000)
    for i, env in enumerate(envs):
        status = stage_status(history, env, model_id)
        if status in ("promoted", "champion"):
            continue
        if status == "entered" and _champion(stage_delivery(delivery, env)) == model_id:
            continue                                  # entered as the stage's first champion
        if status in ("entered", "rolled-back"):
            return StageOutcome(env.name, "in-rollout" if status == "entered" else status)
        if i == 0:
            raise DeliveryError(f"{model_id} never entered {env.name} ({env.path})", "promote it first")
        verified = next(c for c, t in history if t.get("Aicd-Model-Id") == model_id
                        and t.get("Aicd-Path") == envs[i - 1].path)
        return _enter(delivery, envs[i - 1], env, model_id, verified)
    return StageOutcome(envs[-1].name, "done", message=f"{model_id} serves in every environment")


def open_pull_request(delivery: DeliverySpec, branch: str, title: str, body: str) -> str | None:
    """Open the pull (merge) request of ``branch`` through the forge's API; its web URL (None: no forge)."""
    forge = delivery.forge
    if forge is None:
        return None
    from aicd.components.secrets import read_secret

    headers = {"Authorization": f"Bearer {read_secret(forge.token_secret)}", "Accept": "application/json"}
    base = forge.api_url.rstrip("/")
    if forge.kind == "github":
        url, payload, link = f"{base}/repos/{forge.project}/pulls", {
            "title": title, "head": branch, "base": delivery.gitops.branch, "body": body}, "html_url"
    else:
        url, payload, link = f"{base}/projects/{quote(forge.project, safe='')}/merge_requests", {
            "title": title, "source_branch": branch, "target_branch": delivery.gitops.branch,
            "description": body}, "web_url"
    try:
        resp = requests.post(url, json=payload, headers=headers, timeout=30)
    except requests.RequestException as err:
        raise DeliveryError(f"the {forge.kind} API at {forge.api_url} is unreachable ({type(err).__name__}); "
                            f"branch {branch} is pushed", "open its pull request by hand, or fix `delivery.forge`"
                            ) from None
    if resp.status_code not in (200, 201):
        raise DeliveryError(f"the {forge.kind} API refused the pull request of {branch}: HTTP {resp.status_code} "
                            f"{resp.text[:300]}", "check `delivery.forge` and the token's rights; the branch is "
                                                  "pushed, open its pull request by hand meanwhile")
    return resp.json()[link]


def roll_out_chain(delivery: DeliverySpec, model_id: str, prometheus_url: str | None = None,
                   max_intervals: int | None = None, sleep=None) -> tuple[list, Any, list[StageOutcome]]:
    """Roll ``model_id`` out stage after stage: (every interval, the last rollout step, each stage's outcome).

    Stops at a rollback, at a pull-request stage (awaiting its merge), at an undecided rollout
    (``max_intervals``), or when every stage serves it. Resumable: each call starts from Git.
    """
    import time

    from aicd.components.delivery.canary import roll_out

    steps, final, outcomes = [], None, []
    for _ in range(2 * len(delivery.environments) + 1):
        where = advance(delivery, model_id)
        outcomes.append(where)
        if where.status not in ("entered", "in-rollout", "champion"):
            break
        if where.status == "champion":
            continue
        env = next(e for e in delivery.environments if e.name == where.stage)
        more, final = roll_out(stage_delivery(delivery, env), model_id, prometheus_url, max_intervals,
                               sleep or time.sleep)
        steps += more
        if final is None or final.action != "promote":
            break
    return steps, final, outcomes


def drive(delivery: DeliverySpec, model_id: str | None, max_intervals: int | None = None):
    """The rollout step's logic: through the chain when ``delivery.environments`` is set, else in the one
    overlay. (intervals, last step, stage outcomes, action)."""
    from aicd.components.delivery.canary import roll_out

    if delivery.environments and model_id:
        steps, final, stages = roll_out_chain(delivery, model_id, max_intervals=max_intervals)
        last = stages[-1].status if stages else "none"
        action = last if last in ("awaiting-merge", "done", "rolled-back") else (final.action if final else last)
        return steps, final, stages, action
    steps, final = roll_out(delivery, model_id, max_intervals=max_intervals)
    return steps, final, [], final.action if final else "none"
