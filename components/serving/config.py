"""The predictor's command line and configuration (docs/contracts.md, "Predictor").

``python -m aicd.components.serving --base URI [--adapter NAME=URI ...] ...``: the flags
are a contract that canary analysis, feedback collection and the CLI rely on.
"""

import argparse
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aicd.components.errors import ServingError
from aicd.components.serving.prompts import PromptSettings, check_template, parse_few_shot, prompt_flags

TASKS = ("causal-lm", "text-classification")
BASE_NAME = "base"
MODEL_ROOT = "/mnt/models"  # where KServe's storage initializer puts what a predictor's storageUris name
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9._]*[a-z0-9])?$")
# Defaults come from the spec (delivery.serving) so a server started by hand and one
# rendered from a spec behave the same.
_DEFAULT_BATCH, _DEFAULT_WAIT_MS, _DEFAULT_BODY, _DEFAULT_MAX_TOKENS = 8, 10.0, 8 * 1024 * 1024, 512


@dataclass(frozen=True)
class ServeConfig:
    base: str
    adapters: dict[str, str] = field(default_factory=dict)
    task: str = "causal-lm"
    labels: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 8080
    model_name: str = BASE_NAME
    log_dir: Path | None = None
    max_batch_size: int = _DEFAULT_BATCH
    max_batch_wait_ms: float = _DEFAULT_WAIT_MS
    max_body_bytes: int = _DEFAULT_BODY
    max_new_tokens_limit: int = _DEFAULT_MAX_TOKENS
    max_n: int = 4
    mix_adapters: bool = False
    admin_token_file: Path | None = None
    feedback_key_file: Path | None = None
    feedback_state_dir: Path | None = None
    feedback_token_file: Path | None = None
    adapter_roots: tuple[Path, ...] = (Path(MODEL_ROOT),)
    base_digest: str | None = None
    feedback_rate_per_minute: int = 60
    log_max_mb: float = 256.0
    log_max_age_hours: float = 24.0
    log_budget_mb: float = 4096.0
    log_mask_fields: tuple[str, ...] = ()
    fault_rate: float = 0.0
    seed: int | None = None
    prompt: PromptSettings = field(default_factory=PromptSettings)


def check_name(name: str, what: str = "adapter name") -> str:
    """A served name: lowercase letters, digits, '-', '.', '_' (it appears in URLs and labels)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ServingError(f"{what} {name!r} is not valid",
                           "use lowercase letters, digits, '-', '.' or '_', starting and ending with a "
                           "letter or digit, e.g. support-bot-v2")
    return name


def parse_adapter(value: str) -> tuple[str, str]:
    """``NAME=URI`` of one --adapter flag."""
    name, sep, uri = value.partition("=")
    if not sep or not name or not uri:
        raise ServingError(f"--adapter {value!r} must be NAME=URI", "e.g. --adapter support-bot=/models/lora-r8")
    return check_name(name), uri


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m aicd.components.serving",
                                description="KServe predictor for a base model and its LoRA adapters.")
    p.add_argument("--base", required=True, help="base model URI (local path, pkg://, pvc://, hf://, s3://, gs://)")
    p.add_argument("--base-digest", default=None, metavar="sha256:HEX",
                   help="the digest --base must have: its card's digest, or for a folder without card.json the "
                        "content digest of its files (`aicd digest PATH` prints it; a promoted full model is "
                        "pinned so). Without it --base must carry a card.json that verifies (pkg://: pip's RECORD)")
    p.add_argument("--adapter", action="append", default=[], metavar="NAME=URI",
                   help="an aicd adapter artifact to serve under NAME (repeatable)")
    p.add_argument("--task", choices=TASKS, default="causal-lm")
    p.add_argument("--labels", default="", help="comma-separated class labels (text-classification)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--model-name", default=BASE_NAME, help="name the base model is served under")
    p.add_argument("--log-dir", default=None, help="folder of payloads.jsonl (payload logging off without it)")
    p.add_argument("--max-batch-size", type=int, default=_DEFAULT_BATCH, help="1 serves one request at a time")
    p.add_argument("--max-batch-wait-ms", type=float, default=_DEFAULT_WAIT_MS)
    p.add_argument("--max-body-bytes", type=int, default=_DEFAULT_BODY)
    p.add_argument("--max-new-tokens-limit", type=int, default=_DEFAULT_MAX_TOKENS,
                   help="largest max_tokens a request may ask for")
    p.add_argument("--admin-token-file", default=None, help="file holding the bearer token of /v1/admin/*")
    p.add_argument("--feedback-key-file", default=None,
                   help="file holding the key that signs request ids (one Secret for all replicas)")
    p.add_argument("--feedback-state-dir", default=None,
                   help="folder shared by all replicas where used feedback ids are marked (once per id)")
    p.add_argument("--adapter-root", action="append", default=[], metavar="FOLDER",
                   help="a folder POST /v1/admin/adapters may load adapters from (repeatable; pvc:// URIs are "
                        f"always allowed); default {MODEL_ROOT}, where KServe's storage initializer puts models")
    p.add_argument("--feedback-token-file", default=None, help="bearer token /v1/feedback requires (optional)")
    p.add_argument("--feedback-rate-per-minute", type=int, default=60, help="feedback requests per client")
    p.add_argument("--log-max-mb", type=float, default=256.0, help="rotate the payload log past this size")
    p.add_argument("--log-max-age-hours", type=float, default=24.0, help="rotate the payload log after this age")
    p.add_argument("--log-budget-mb", type=float, default=4096.0,
                   help="disk budget of the rotated payload logs; the oldest are deleted past it")
    p.add_argument("--log-mask-field", action="append", default=[], metavar="NAME",
                   help="JSON field masked (at any depth) before a payload is logged; repeatable")
    p.add_argument("--fault-rate", type=float, default=0.0, help="fraction of inference requests answered 503")
    p.add_argument("--mix-adapters", action="store_true",
                   help="batch generation requests of different adapters together (one forward pass per step)")
    p.add_argument("--max-n", type=int, default=4,
                   help="most choices (OpenAI `n`) one request may ask for per prompt")
    p.add_argument("--seed", type=int, default=None, help="seed of the fault injection (drills)")
    p.add_argument("--system-prompt", default=None, metavar="TEXT",
                   help="system turn of chat requests that carry none (the spec's task.system_prompt)")
    p.add_argument("--prompt-template", default=None, metavar="TEXT",
                   help="str.format template with {instruction} the prompt is formatted into (the spec's)")
    p.add_argument("--few-shot", default=None, metavar="FILE_OR_JSON",
                   help='[question, answer] pairs put before the first user turn, e.g. [["2+2?", "4"]]')
    return p


def prompt_settings(args: argparse.Namespace) -> PromptSettings:
    given = [f for f, v in (("--system-prompt", args.system_prompt), ("--prompt-template", args.prompt_template),
                            ("--few-shot", args.few_shot)) if v is not None]
    if given and args.task != "causal-lm":
        raise ServingError(f"{', '.join(given)} only apply to --task causal-lm (a classifier reads the raw text)",
                           "drop them, or serve a causal LM")
    return PromptSettings(system=args.system_prompt or None,
                          template=check_template(args.prompt_template) if args.prompt_template is not None else None,
                          shots=parse_few_shot(args.few_shot) if args.few_shot is not None else ())


def _bounded(value: float, flag: str, low: float, high: float | None = None, fix: str = "") -> None:
    if value < low or (high is not None and value > high):
        rng = f">= {low:g}" if high is None else f"between {low:g} and {high:g}"
        raise ServingError(f"{flag} must be {rng}, got {value:g}", fix or f"pass {flag} {rng}")


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    adapters: dict[str, str] = {}
    for value in args.adapter:
        name, uri = parse_adapter(value)
        if name in adapters:
            raise ServingError(f"--adapter {name!r} is given twice", "give each adapter a distinct name")
        adapters[name] = uri
    model_name = check_name(args.model_name, "--model-name")
    if model_name in adapters:
        raise ServingError(f"--adapter {model_name!r} has the base model's name",
                           "rename the adapter or pass another --model-name")
    labels = [x.strip() for x in args.labels.split(",") if x.strip()]
    if args.task == "causal-lm" and labels:
        raise ServingError("--labels is only for --task text-classification", "drop --labels or set --task")
    _bounded(args.port, "--port", 0, 65535)
    _bounded(args.max_batch_size, "--max-batch-size", 1, fix="use 1 to serve one request at a time")
    _bounded(args.max_batch_wait_ms, "--max-batch-wait-ms", 0)
    _bounded(args.max_body_bytes, "--max-body-bytes", 1024, fix="allow at least 1024 bytes")
    _bounded(args.max_new_tokens_limit, "--max-new-tokens-limit", 1)
    _bounded(args.max_n, "--max-n", 1, 64)
    _bounded(args.fault_rate, "--fault-rate", 0.0, 1.0)
    _bounded(args.feedback_rate_per_minute, "--feedback-rate-per-minute", 1)
    for flag in ("log_max_mb", "log_max_age_hours", "log_budget_mb"):
        if not getattr(args, flag) > 0:
            raise ServingError(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}",
                               "give a positive number")
    for flag in ("feedback_key_file", "feedback_token_file"):
        value = getattr(args, flag)
        if value is not None and not Path(value).is_file():
            raise ServingError(f"--{flag.replace('_', '-')} {value} does not exist", "mount the Secret there")
    token_file = Path(args.admin_token_file) if args.admin_token_file else None
    if token_file is not None and not token_file.is_file():
        raise ServingError(f"--admin-token-file {token_file} does not exist",
                           "mount the admin token Secret there, or drop the flag to disable the admin endpoints")
    return ServeConfig(base=args.base, adapters=adapters, task=args.task, labels=labels, host=args.host,
                       port=args.port, model_name=model_name, log_dir=Path(args.log_dir) if args.log_dir else None,
                       max_batch_size=args.max_batch_size, max_batch_wait_ms=args.max_batch_wait_ms,
                       max_body_bytes=args.max_body_bytes, max_new_tokens_limit=args.max_new_tokens_limit,
                       max_n=args.max_n, mix_adapters=args.mix_adapters, admin_token_file=token_file,
                       fault_rate=args.fault_rate, seed=args.seed,
                       feedback_key_file=_path(args.feedback_key_file), feedback_state_dir=_path(
                           args.feedback_state_dir), feedback_token_file=_path(args.feedback_token_file),
                       feedback_rate_per_minute=args.feedback_rate_per_minute, log_max_mb=args.log_max_mb,
                       log_max_age_hours=args.log_max_age_hours, log_budget_mb=args.log_budget_mb,
                       log_mask_fields=tuple(args.log_mask_field),
                       adapter_roots=tuple(Path(r) for r in args.adapter_root) or (Path(MODEL_ROOT),),
                       base_digest=args.base_digest,
                       prompt=prompt_settings(args))


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def parse_config(argv: list[str] | None = None) -> ServeConfig:
    return config_from_args(build_parser().parse_args(argv))


def read_admin_token(config: ServeConfig) -> str | None:
    """The admin bearer token, or None when the admin endpoints are disabled."""
    if config.admin_token_file is None:
        return None
    token = config.admin_token_file.read_text(encoding="utf-8").strip()
    if len(token) < 16:
        raise ServingError(f"the admin token in {config.admin_token_file} is shorter than 16 characters",
                           "write a long random token, e.g. `openssl rand -hex 32`")
    return token


SECRET_FLAGS = {"--admin-token-file": "admin_token_secret", "--feedback-key-file": "feedback_key_secret",
                "--feedback-token-file": "feedback_token_secret"}


def secret_mounts(serving: Any) -> dict[str, tuple[str, str]]:
    """Flag -> (Secret name, folder it is mounted at) for each Secret ``delivery.serving`` names: the
    predictor reads key ``token`` there; the promoted InferenceService mounts the Secret at that folder."""
    from aicd.components.secrets import secrets_root

    root = secrets_root()
    named = {flag: getattr(serving, field, None) for flag, field in SECRET_FLAGS.items()}
    return {flag: (name, f"{root}/{name}") for flag, name in named.items() if name}


def predictor_args(serving: Any, base: str, adapters: dict[str, str] | None = None, task: str = "causal-lm",
                   labels: list[str] | None = None, model_name: str | None = None,
                   prompt: PromptSettings | None = None, base_digest: str | None = None) -> list[str]:
    """The predictor's command-line arguments for a spec's ``delivery.serving`` section (and ``prompt``:
    the system prompt, template and few-shot examples the model was evaluated with).

    The one place a ServingSpec becomes predictor flags (for the InferenceService args).
    The admin token, when ``admin_token_secret`` is set, is read from where the platform
    profile mounts that Secret (``$AICD_SECRETS_DIR/<name>/token``, see components/secrets.py).
    """
    args = ["--base", base, "--task", task, "--model-name", model_name or serving.name,
            "--max-batch-size", str(serving.max_batch_size), "--max-batch-wait-ms", f"{serving.max_batch_wait_ms:g}",
            "--max-body-bytes", str(serving.max_body_bytes),
            "--max-new-tokens-limit", str(serving.max_new_tokens_limit),
            "--max-n", str(getattr(serving, "max_n", 4))]
    if getattr(serving, "mix_adapters", False):
        args.append("--mix-adapters")
    if base_digest:
        args += ["--base-digest", base_digest]
    if labels:
        args += ["--labels", ",".join(labels)]
    for name, uri in (adapters or {}).items():
        args += ["--adapter", f"{check_name(name)}={uri}"]
    for flag, (_, folder) in secret_mounts(serving).items():
        args += [flag, f"{folder}/token"]
    args += ["--feedback-rate-per-minute", str(getattr(serving, "feedback_rate_per_minute", 60))]
    return args + prompt_flags(prompt or PromptSettings())
