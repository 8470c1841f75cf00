"""Promotion through environments: dev -> staging -> production (pull request), state in commit trailers.

Real parts: the git CLI with a bare repository as the GitOps remote, holding aicd's own
overlays (dev, staging, production). Stand-ins: the GitHub API is a local HTTP server
replaying a recorded exchange (tests/e2e/recorded/github-create-pull.json), the one stand-in
the chain allows; and the stage rollouts' verdicts are given to the same decision commit the
rollout makes (`commit_interval`) instead of being read from Prometheus, which
test_delivery_rollout.py covers with real predictors.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from delivery_world import COMPARISON, GATES, ROOT, ensure_gitops_repo, evaluated, git, make_adapter
from helpers.http_answers import send_json

from aicd.components.delivery.analysis import Interval
from aicd.components.delivery.canary import commit_interval, progress
from aicd.components.delivery.environments import advance, stage_delivery
from aicd.components.delivery.gitops import read_history, read_rollout
from aicd.components.errors import DeliveryError
from aicd.components.secrets import secret_env_name
from aicd.components.spec import parse_spec

pytestmark = pytest.mark.e2e
RECORDED = json.loads((Path(__file__).parent / "recorded" / "github-create-pull.json").read_text())
OVERLAYS = "manifests/overlays"


class Replay(BaseHTTPRequestHandler):
    """Answers the recorded request with the recorded response; anything else is a 404. Keeps what it got."""

    received: list[dict] = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        want = RECORDED["request"]
        status, payload = (RECORDED["response"]["status"], RECORDED["response"]["body"]) \
            if self.path == want["path"] else (404, {"message": "Not Found"})
        send_json(self, status, payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def forge():
    Replay.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Replay)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", Replay.received
    finally:
        server.shutdown()
        thread.join()


@pytest.fixture
def chain(support_bot_spec, tiny_causal_lm, tmp_path, forge, monkeypatch):
    repo = tmp_path / "gitops.git"
    ensure_gitops_repo(repo, "main", ROOT / "manifests")
    raw = dict(support_bot_spec)
    raw["candidates"] = [{"name": "tiny", "uri": str(tiny_causal_lm)}]
    raw["metrics"] = {**raw["metrics"], "gates": GATES}
    raw["delivery"] = {"gitops": {"repo": str(repo), "path": f"{OVERLAYS}/dev"},
                       "canary": {"steps": [50, 100]},
                       "environments": [{"name": "dev", "path": f"{OVERLAYS}/dev"},
                                        {"name": "staging", "path": f"{OVERLAYS}/staging"},
                                        {"name": "production", "path": f"{OVERLAYS}/production",
                                         "mode": "pull-request"}],
                       "forge": {"kind": "github", "api_url": forge[0], "project": "acme/gitops"}}
    monkeypatch.setenv(secret_env_name("gitops-forge-token", "token"), "recorded-token")
    return parse_spec(raw), repo, tmp_path


def trailers(repo: Path, rev: str) -> dict[str, str]:
    out = git("--git-dir", str(repo), "log", "-1", "--format=%(trailers:only,unfold)", rev)
    return dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)


def judged(spec, stage: str, decision: str) -> str:
    """The stage's rollout gives ``decision`` for its canary (the same commit the rollout loop makes)."""
    env = next(e for e in spec.delivery.environments if e.name == stage)
    delivery = stage_delivery(spec.delivery, env)
    state = read_rollout(delivery)
    step = commit_interval(delivery, state, Interval(decision, 10.0, 10.0, reasons=["given by the test"]),
                           progress(read_history(delivery), state.canary, env.path))
    return step.action


def test_candidate_moves_stage_by_stage_and_production_gets_a_pull_request(chain, forge):
    from aicd.components.delivery.gate import gate_candidate
    from aicd.components.delivery.gitops import promote_adapter, promote_base_model

    spec, repo, tmp = chain
    base = {"name": "tiny", "uri": spec.candidates[0].uri, "digest": None}
    promote_base_model(spec, gate_candidate(spec, evaluated(base), COMPARISON, None))   # dev's first champion
    base_id = read_rollout(spec.delivery).champion
    first = advance(spec.delivery, base_id)           # dev has no canary to verify: staging takes it as champion
    assert (first.stage, first.status) == ("staging", "champion")
    assert trailers(repo, "main")["Aicd-Stage-Verified-In"].startswith("dev@")
    pr = advance(spec.delivery, base_id)              # production: a branch and a pull request, not a push
    assert (pr.stage, pr.status, pr.pull_request) == ("production", "awaiting-merge",
                                                      "https://github.com/acme/gitops/pull/42")
    assert forge[1][0]["auth"] == "Bearer recorded-token"
    assert forge[1][0]["body"]["base"] == "main" and forge[1][0]["body"]["head"].startswith("aicd/production-")
    branch = forge[1][0]["body"]["head"]
    again = advance(spec.delivery, base_id)           # a re-run: the branch awaits its merge, no second request
    assert (again.status, again.message, len(forge[1])) == ("awaiting-merge", f"branch {branch} awaits its merge", 1)
    assert trailers(repo, branch)["Aicd-Stage"] == "production"
    assert "aicd.dev/model-id" not in git("--git-dir", str(repo), "show", f"main:{OVERLAYS}/production/"
                                          "inferenceservice.yaml")      # main waits for the review

    # An adapter: canary in dev; only after dev's rollout promoted it does staging see it (as a canary).
    card = make_adapter(Path(spec.candidates[0].uri), tmp / "adapter")
    blessing = gate_candidate(spec, evaluated({"name": "lora", "uri": str(tmp / "adapter"), "digest": card["digest"]}),
                              COMPARISON, card["digest"], champion=base)
    promote_adapter(spec, blessing, tmp / "adapter")
    assert advance(spec.delivery, card["digest"]).status == "in-rollout"
    assert [judged(spec, "dev", "pass"), judged(spec, "dev", "pass")] == ["step", "promote"]
    entered = advance(spec.delivery, card["digest"])
    assert (entered.stage, entered.status) == ("staging", "entered")
    staging = read_rollout(stage_delivery(spec.delivery, spec.delivery.environments[1]))
    assert (staging.canary, staging.traffic, staging.champion) == (card["digest"], 50, base_id)
    assert advance(spec.delivery, card["digest"]).status == "in-rollout"     # resumed from Git: nothing new
    assert judged(spec, "staging", "down") == "rollback"
    stopped = advance(spec.delivery, card["digest"])
    assert (stopped.stage, stopped.status) == ("staging", "rolled-back")
    assert len(forge[1]) == 1                          # production never saw the rolled-back adapter


def test_chain_errors_name_the_fix(chain):
    spec, _, _ = chain
    with pytest.raises(DeliveryError, match=r"never entered dev \(manifests/overlays/dev\).*\n  fix: promote it first"):
        advance(spec.delivery, "sha256:" + "0" * 64)
    raw = spec.model_dump(mode="json", exclude_none=True)
    raw["delivery"]["environments"][0]["mode"] = "pull-request"
    with pytest.raises(Exception, match="only the last of `delivery.environments` can be `mode: pull-request`"):
        parse_spec(raw)
