"""Promotion through Git (docs/design.md section 6.2): every rollout change is one commit.

:func:`commit_overlay` is the one transaction: clone the GitOps repository, read the
overlay's InferenceService, let an edit function check the state it expects
(compare-and-swap: a stale change raises :class:`StaleChange`) and change it,
commit, push. When the push is refused because the branch moved on, it fetches,
rebases the edit onto the new tip (re-applies it there, so the compare-and-swap is
checked again on what is now in Git) and retries. It never force-pushes; every
attempt happens in a private clone, so a failure leaves nothing half-written.
"""

import json
import logging
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aicd.components.cards import atomic_write_text
from aicd.components.delivery import isvc
from aicd.components.delivery.gate import model_id
from aicd.components.delivery.git import PushRejected, check_repo_url, credentials_env, git
from aicd.components.errors import DeliveryError
from aicd.components.spec import DeliverySpec, Spec
from aicd.components.uris import serving_uri

log = logging.getLogger(__name__)
Edit = Callable[[dict[str, Any], isvc.RolloutState], str]


class StaleChange(DeliveryError):
    """Git no longer holds the champion or canary this change was decided against."""


class Superseded(StaleChange):
    """This model's canary was replaced in Git by a later promotion (``by``, in commit ``commit``)."""

    def __init__(self, model: str, by: str, commit: str | None, hint: str):
        self.model, self.by, self.commit = model, by, commit
        where = f" in commit {commit[:12]}" if commit else ""
        super().__init__(f"canary {model} was superseded by {by}{where}: a later promotion replaced it", hint)


@dataclass(frozen=True)
class CommitResult:
    action: str              # what the edit did: champion, canary, traffic, promote, rollback
    commit: str | None       # the pushed commit (None when nothing changed)
    branch: str              # where it was pushed
    attempts: int
    before: isvc.RolloutState
    after: isvc.RolloutState

    @property
    def replaced(self) -> str | None:
        """The canary this change replaced by another one (its caller's rollout will be told), or None."""
        old, new = self.before.canary, self.after.canary
        return old if old and new and old != new else None


def _section(spec: Spec | DeliverySpec) -> DeliverySpec:
    """The delivery section: rollout code passes only it, promotion code the whole spec."""
    return spec if isinstance(spec, DeliverySpec) else spec.delivery


def _clone(delivery: DeliverySpec, env: dict[str, str], dest: Path) -> None:
    gitops = delivery.gitops
    try:
        git(["clone", "--quiet", "--no-tags", "--single-branch", "--branch", gitops.branch, gitops.repo, str(dest)],
            None, env, "clone")
    except DeliveryError as err:
        if "remote branch" in err.message.lower() and "not found" in err.message.lower():
            raise DeliveryError(f"the GitOps repository has no branch {gitops.branch!r}",
                                "create it, or set `delivery.gitops.branch`") from None
        raise
    git(["config", "user.name", gitops.author_name], dest, env, "config")
    git(["config", "user.email", gitops.author_email], dest, env, "config")


def _overlay_file(delivery: DeliverySpec, clone: Path) -> Path:
    path = clone / delivery.gitops.path / isvc.ISVC_FILE
    if not path.is_file():
        raise DeliveryError(f"the GitOps repository has no {delivery.gitops.path}/{isvc.ISVC_FILE}",
                            "set `delivery.gitops.path` to an overlay folder copied from aicd's manifests/overlays")
    return path


def _attempt(delivery: DeliverySpec, clone: Path, env: dict[str, str], edit: Edit, message: str,
             record: bool = False):
    """Apply the edit on the clone's HEAD and commit it; (action, before, after, changed).

    ``record``: commit even when the overlay did not change (an empty commit whose message and
    trailers record an analysis interval)."""
    path = _overlay_file(delivery, clone)
    rel = path.relative_to(clone).as_posix()
    original = path.read_text(encoding="utf-8")
    doc = isvc.load(original, rel)
    isvc.ensure_mode(doc, delivery.serving.deployment_mode, rel)
    before = isvc.state(doc)
    action = edit(doc, before)
    after = isvc.state(doc)
    unchanged = isvc.load(original, rel)
    isvc.ensure_mode(unchanged, delivery.serving.deployment_mode, rel)
    if doc == unchanged:
        if record and message:
            git(["commit", "--quiet", "--allow-empty", "-m", message], clone, env, "commit")
            return action, before, after, True
        return action, before, after, False
    header = "".join(line for line in original.splitlines(keepends=True)[:20] if line.startswith("#"))
    atomic_write_text(path, header + isvc.dump(doc))
    git(["add", "--", rel], clone, env, "add")
    git(["commit", "--quiet", "-m", message, "--", rel], clone, env, "commit")
    return action, before, after, True


def _branch_exists(branch: str) -> DeliveryError:
    return DeliveryError(f"branch {branch!r} already exists in the GitOps repository",
                         "merge or delete that pull-request branch first")


def commit_overlay(spec: Spec | DeliverySpec, edit: Edit, message: str, branch: str | None = None,
                   record: bool = False) -> CommitResult:
    """Clone, edit the overlay's InferenceService, commit and push, retrying on concurrent changes.

    ``edit(doc, state)`` checks ``state`` (raising :class:`StaleChange`), changes ``doc`` in place
    and returns the action's name. ``branch`` (pull-request mode) pushes a new branch instead.
    ``record`` commits ``message`` even when the overlay is unchanged.
    """
    delivery = _section(spec)
    gitops = delivery.gitops
    check_repo_url(gitops.repo)
    target = branch or gitops.branch
    with credentials_env(gitops) as env, tempfile.TemporaryDirectory(prefix="aicd-gitops-") as tmp:
        clone = Path(tmp) / "repo"
        _clone(delivery, env, clone)
        # A pull-request branch is new or it is an earlier run's: a re-run within the same second makes
        # the very same commit, whose push "succeeds" as a no-op, so ask the remote instead of pushing.
        if branch and git(["ls-remote", "--heads", "origin", f"refs/heads/{branch}"], clone, env, "ls-remote").strip():
            raise _branch_exists(branch)
        deadline, attempt = time.monotonic() + gitops.retry_seconds, 0
        while True:
            attempt += 1
            # The edit runs on the current tip every time: its compare-and-swap (the champion it expects)
            # is checked again after each rebase.
            action, before, after, changed = _attempt(delivery, clone, env, edit, message, record)
            if not changed:
                return CommitResult(action, None, target, attempt, before, after)
            try:
                git(["push", "--quiet", "origin", f"HEAD:refs/heads/{target}"], clone, env, "push")
            except PushRejected:
                if branch:
                    raise _branch_exists(branch) from None
                left = deadline - time.monotonic()
                if left <= 0 or (gitops.max_retries is not None and attempt >= gitops.max_retries):
                    raise DeliveryError(
                        f"gave up after {attempt} attempts in {gitops.retry_seconds:g} s: the GitOps branch "
                        f"{gitops.branch!r} kept moving", "retry later, or raise `delivery.gitops.retry_seconds`"
                        + ("" if gitops.max_retries is None else " and `delivery.gitops.max_retries`")) from None
                log.info("push of %s refused (attempt %d): the branch moved on; fetching and rebasing",
                         action, attempt)
                git(["fetch", "--quiet", "origin", gitops.branch], clone, env, "fetch")
                git(["reset", "--quiet", "--hard", f"origin/{gitops.branch}"], clone, env, "rebase")
                time.sleep(min(left, backoff(attempt)))
                continue
            commit = git(["rev-parse", "HEAD"], clone, env, "rev-parse").strip()
            log.info("%s pushed to %s as %s", action, target, commit[:12])
            return CommitResult(action, commit, target, attempt, before, after)


def backoff(attempt: int, base: float = 0.05, cap: float = 2.0) -> float:
    """Seconds to wait before attempt ``attempt + 1``: full jitter over an exponential window, so racing
    writers spread out instead of colliding again in lock step."""
    return random.uniform(0.0, min(cap, base * 2 ** min(attempt, 16)))


def read_rollout(spec: Spec | DeliverySpec) -> isvc.RolloutState:
    """The rollout state (champion, canary, traffic) declared in the GitOps branch now."""
    return commit_overlay(spec, lambda doc, state: "read", "").before


def read_history(spec: Spec | DeliverySpec, limit: int = 200) -> list[tuple[str, dict[str, str]]]:
    """The GitOps branch's latest commits, newest first: (commit, its ``Aicd-*`` trailers).

    The rollout's state (analysis counters, each stage's outcome) lives in these trailers, so a
    retried step or a later stage reads it back from Git rather than from memory.
    """
    delivery = _section(spec)
    check_repo_url(delivery.gitops.repo)
    with credentials_env(delivery.gitops) as env, tempfile.TemporaryDirectory(prefix="aicd-gitops-") as tmp:
        clone = Path(tmp) / "repo"
        _clone(delivery, env, clone)
        out = git(["log", f"-{limit}", "--format=%H%n%(trailers:only,unfold)%x1e"], clone, env, "log")
    history = []
    for entry in filter(None, (e.strip() for e in out.split("\x1e"))):
        commit, *lines = entry.splitlines()
        trailers = dict(line.split(": ", 1) for line in lines if line.startswith("Aicd-") and ": " in line)
        history.append((commit, trailers))
    return history


def read_champion(spec: Spec) -> isvc.ModelRef | None:
    """The champion declared in the GitOps branch now (its identity, base and adapter URIs), or None."""
    found: list[isvc.ModelRef | None] = []

    def read(doc: dict[str, Any], state: isvc.RolloutState) -> str:
        found.append(isvc.champion_ref(doc))
        return "read"

    commit_overlay(spec, read, "")
    return found[0]


@dataclass(frozen=True)
class Champion:
    """What a new candidate is evaluated against: the serving champion, or the base model."""

    model_id: str       # the champion's identity in Git, "" when none is declared yet
    model_uri: str      # its Model artifact (adapter or full model) to evaluate; "" for a bare base model
    candidate: str      # the spec's candidate to evaluate when model_uri is "" ("": the first one)
    mode: str = ""      # a bare base model's leaderboard mode ("": zero-shot) ...
    shot_examples: tuple[tuple[str, str], ...] = ()   # ... and the few-shot examples it is served with


def champion_to_beat(spec: Spec, revision: str = "") -> Champion:
    """The serving champion a new candidate must beat; the base model while none serves. ``revision``:
    the GitOps branch's commit to read it at (revision.champion_revision's), else the branch's tip.

    A bare base champion (``base:<uri>``, stage 2's choice) is evaluated as the spec's candidate
    with that URI; when the spec no longer lists it, the first candidate is evaluated instead, and
    the promotion will be refused as stale (the champion in Git is not what the gate compared). A
    few-shot one (``base:<uri>#<mode>:<hash>``) is evaluated in that mode, with the examples it is
    served with (its ``--few-shot`` argument).
    """
    if revision:
        from aicd.components.delivery.revision import read_champion_at

        ref = read_champion_at(spec, revision)
    else:
        ref = read_champion(spec)
    if ref is None:
        return Champion("", "", "")
    if not ref.model_id.startswith("base:"):
        return Champion(ref.model_id, ref.adapter_uri or ref.base_uri, "")
    uri, _, _ = isvc.parse_base_id(ref.model_id)
    names = [c.name for c in spec.candidates if c.uri == uri]
    if not names:
        log.warning("the champion %s is not among the spec's candidates; comparing with %s instead, so the "
                    "promotion will be refused as stale", ref.model_id, spec.candidates[0].name)
        return Champion(ref.model_id, "", "")
    return Champion(ref.model_id, "", names[0], ref.mode or "", ref.shots)


def write_champion(spec: Spec, out_dir: str | Path, revision: str = "") -> Champion:
    """Write the champion to beat as a Model artifact at ``out_dir``: a copy of its adapter or model
    (verified against the digest Git declares), or a reference to a base candidate (``BASE_MODEL_REF``).

    A copy, not a URI: evaluating it is keyed by content, so a champion that an earlier run already
    evaluated as its candidate comes from the cache.
    """
    import shutil

    from aicd.components.cards import atomic_dir, verify_card
    from aicd.components.errors import UriError
    from aicd.components.models import BASE_MODEL_REF
    from aicd.components.uris import resolve_path

    champion = champion_to_beat(spec, revision)
    with atomic_dir(out_dir) as tmp:
        if champion.model_uri:
            try:
                source = resolve_path(champion.model_uri)
            except UriError as err:
                raise DeliveryError(f"the champion {champion.model_id} that Git declares cannot be read from "
                                    f"{champion.model_uri}: {err.message}",
                                    "restore the artifact there (a local run's folder may have been removed), or "
                                    "point the GitOps overlay at a model that exists (for a local demo: remove "
                                    "the GitOps repository too, to start afresh)") from None
            digest = verify_card(source)["digest"]
            if digest != champion.model_id:
                raise DeliveryError(f"the champion artifact at {champion.model_uri} has digest {digest}, but Git "
                                    f"declares {champion.model_id}",
                                    "restore the artifact, or roll the GitOps overlay back to a model that exists")
            shutil.copytree(source, tmp, dirs_exist_ok=True)
        else:
            ref = {"candidate": champion.candidate, "model_id": champion.model_id,
                   "mode": champion.mode or "zero-shot", "shot_examples": [list(s) for s in champion.shot_examples]}
            (tmp / BASE_MODEL_REF).write_text(json.dumps(ref, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    log.info("champion to beat: %s", champion.model_id or f"none yet (base model {spec.candidate().name})")
    return champion


def _num(value: Any, fmt: str = ".4g") -> str:
    return format(value, fmt) if isinstance(value, (int, float)) else "?"


def _summary_lines(blessing: dict[str, Any]) -> list[str]:
    summary = blessing.get("summary") or {}
    primary, cand, comp = summary.get("primary"), summary.get("candidate") or {}, summary.get("comparison")
    lines = []
    if primary and cand:
        lines.append(f"  {primary}: {_num(cand.get('value'))} [{_num(cand.get('low'))}, {_num(cand.get('high'))}] "
                     f"on n={summary.get('n')}")
    if primary and comp:
        lines.append(f"  vs champion: {_num(comp.get('champion'))}, diff {_num(comp.get('diff'), '+.4g')} "
                     f"[{_num(comp.get('low'), '+.4g')}, {_num(comp.get('high'), '+.4g')}]")
    return lines + [f"  {r}" for r in blessing.get("reasons", [])]


def promotion_message(spec: Spec, ref: isvc.ModelRef, blessing: dict[str, Any], card: dict[str, Any] | None,
                      expected: str | None) -> str:
    """Commit message: what, the evaluation summary, lineage, and machine-readable trailers."""
    short = ref.model_id.removeprefix("sha256:")[:12] if ref.model_id.startswith("sha256:") else ref.model_id
    lines = [f"aicd: promote {short} in {spec.delivery.gitops.path}", "",
             f"Candidate: {ref.model_id}", f"Base model: {ref.base_uri}",
             f"Champion compared against: {expected or 'none (first champion)'}", "", "Gate: passed"]
    lines += _summary_lines(blessing)
    if card:
        lines += ["", "Lineage:", f"  kind: {card.get('kind')}, method: {card.get('method')}",
                  f"  base digest: {card.get('base_digest')}", f"  data fingerprint: {card.get('data_fingerprint')}",
                  f"  hyperparameters: {card.get('hyperparameters')}"]
    lines += ["", f"Aicd-Model-Id: {ref.model_id}", f"Aicd-Path: {spec.delivery.gitops.path}",
              f"Aicd-Expected-Champion: {expected or 'none'}"]
    return "\n".join(lines) + "\n"


def _promotion_edit(spec: Spec, ref: isvc.ModelRef, expected: str | None) -> Edit:
    """The compare-and-swap edit of a promotion: canary at the first step, or the first champion."""
    def edit(doc: dict[str, Any], current: isvc.RolloutState) -> str:
        # Idempotent: a retried step (or an unchanged re-run) whose model Git already declares
        # changes nothing and commits nothing.
        if ref.model_id in (current.champion, current.canary):
            role = "champion" if current.champion == ref.model_id else "canary"
            log.info("%s is already the %s in Git; nothing to commit", ref.model_id, role)
            return f"already-{role}"
        first = current.champion is None and (expected is None or expected.startswith("base:"))
        if not isvc.same_model(expected, current.champion) and not first:
            raise StaleChange(f"stale promotion of {ref.model_id}: the gate compared it with "
                              f"{expected or 'no champion'}, but the champion in Git is now "
                              f"{current.champion or 'none'}",
                              "evaluate and gate the candidate again against the current champion")
        if current.champion is None:
            isvc.set_champion(doc, spec, ref)
            return "champion"
        if current.canary:
            log.warning("canary %s is superseded by %s (its rollout will stop and say so)", current.canary,
                        ref.model_id)
        isvc.start_canary(doc, spec, ref, spec.delivery.canary.steps[0])
        return "canary"
    return edit


def _promote(spec: Spec, ref: isvc.ModelRef, blessing: dict[str, Any], card: dict[str, Any] | None) -> CommitResult:
    expected = model_id(blessing.get("champion"))
    message = promotion_message(spec, ref, blessing, card, expected)
    branch = None
    if spec.delivery.gitops.mode == "pull-request":
        branch = f"aicd/promote-{ref.model_id.split(':', 1)[-1].replace('/', '-').replace('.', '-')[:40]}"
    return commit_overlay(spec, _promotion_edit(spec, ref, expected), message, branch)


def _check_blessing(blessing: dict[str, Any]) -> None:
    if not isinstance(blessing, dict) or "passed" not in blessing:
        raise DeliveryError("the blessing is not a gate output (a JSON object with `passed`)",
                            "pass the blessing.json of gate_candidate")
    if blessing["passed"] is not True:
        raise DeliveryError("the gate did not pass this candidate: " + "; ".join(blessing.get("reasons", [])),
                            "improve the candidate and evaluate it again; a failed gate is never promoted")


def promote_adapter(spec: Spec, blessing: dict[str, Any], adapter_dir: str | Path,
                    adapter_uri: str | None = None) -> CommitResult:
    """Promote the blessed adapter (or full model) artifact at ``adapter_dir`` into the GitOps overlay.

    The artifact's files are verified against its card and the card digest must equal the blessed
    digest. ``adapter_uri`` is where the cluster fetches it (the pipeline's artifact URI); the local
    directory path is used when it is not given.
    """
    from aicd.components.cards import verify_card

    _check_blessing(blessing)
    card = verify_card(adapter_dir)
    if card["digest"] != blessing.get("candidate_digest"):
        raise DeliveryError(f"refusing {adapter_dir}: its digest {card['digest']} is not the blessed digest "
                            f"{blessing.get('candidate_digest')}",
                            "promote exactly the artifact the gate evaluated; re-run the gate for this one")
    uri = serving_uri(adapter_uri) if adapter_uri else str(Path(adapter_dir).resolve())
    # evaluate_model evaluates an artifact with the first candidate's (or the task's) template.
    template = isvc.evaluated_template(spec)
    if card.get("kind") == "model":
        ref = isvc.ModelRef(card["digest"], uri, prompt_template=template)
    elif card.get("kind") == "adapter" and card.get("base_model"):
        ref = isvc.ModelRef(card["digest"], card["base_model"], uri, spec.delivery.serving.name, template)
    else:
        raise DeliveryError(f"{adapter_dir} is a {card.get('kind')!r} artifact without a base model",
                            "promote the Model artifact a training step wrote")
    return _promote(spec, ref, blessing, card)


def promote_base_model(spec: Spec, blessing: dict[str, Any], candidate: str | None = None, mode: str | None = None,
                       shot_examples: list | tuple = ()) -> CommitResult:
    """Deliver a base model with no adapter (the stage-1 choice) through the same gate and Git path.

    ``mode`` and ``shot_examples`` are the leaderboard's (a BASE_MODEL_REF): a base model chosen
    few-shot is served with those examples, under its own identity (``base:<uri>#<mode>:<hash>``).
    It becomes the champion when the overlay has none yet, else the canary.
    """
    _check_blessing(blessing)
    chosen = spec.candidate(candidate)
    blessed = blessing.get("candidate") or {}
    if blessing.get("candidate_digest") is not None or blessed.get("uri") != chosen.uri:
        raise DeliveryError(f"the blessing is for {blessing.get('candidate_digest') or blessed.get('uri')}, "
                            f"not for base model {chosen.name} ({chosen.uri})",
                            "gate the evaluation report of this base model first")
    try:
        shots = tuple((str(q), str(a)) for q, a in shot_examples or ())
    except (TypeError, ValueError) as err:
        raise DeliveryError(f"the few-shot examples of {chosen.name} are not [question, answer] pairs ({err})",
                            "pass the base-model.json select_candidate wrote") from None
    if shots and spec.task.type != "causal-lm":
        raise DeliveryError(f"{chosen.name} has few-shot examples, but the task is {spec.task.type}",
                            "few-shot examples are for causal LMs; pass the classifier's reference without them")
    ref = isvc.ModelRef(isvc.base_model_id(chosen.uri, mode, shots), chosen.uri,
                        prompt_template=isvc.evaluated_template(spec, chosen.name), mode=mode if shots else None,
                        shots=shots)
    evaluated = model_id(blessed)
    if not isvc.same_model(evaluated, ref.model_id):
        raise DeliveryError(f"the blessing is for {evaluated}, but the reference is {ref.model_id} (another mode "
                            "or number of few-shot examples)",
                            "gate the evaluation report of this reference, in its mode, first")
    return _promote(spec, ref, blessing, None)
