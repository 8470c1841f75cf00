"""The project spec: the one config of aicd (DESIGN.md section 3).

One YAML file per product. :func:`load_spec` reads and validates it and raises a
:class:`~aicd.components.errors.SpecError` that lists every problem at once, each
naming the field, what was wrong and the fix. Pipelines pass the spec around as a
plain ``dict``; each step calls :func:`parse_spec` (or validates only the section
it needs with ``Section.model_validate``).
"""

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from aicd.components.errors import SpecError

# Metric name -> True when higher is better. The evaluation contract computes these;
# gates, leaderboards and canary analysis refer to them by name.
METRICS: dict[str, bool] = {
    # classification
    "accuracy": True, "macro_f1": True,
    # generation
    "exact_match": True, "token_f1": True, "rouge_l": True, "chrf": True, "bleu": True,
    "nll": False, "perplexity": False,
    # system
    "latency_p50_ms": False, "latency_p95_ms": False, "tokens_per_second": True,
    "peak_memory_mb": False, "model_size_mb": False, "adapter_size_mb": False,
}
CLASSIFICATION_METRICS = {"accuracy", "macro_f1"}
GENERATION_METRICS = {"exact_match", "token_f1", "rouge_l", "chrf", "bleu", "nll", "perplexity"}
SYSTEM_METRICS = set(METRICS) - CLASSIFICATION_METRICS - GENERATION_METRICS

PositiveInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
PositiveFloat = Annotated[float, Field(gt=0.0)]
_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"  # a Kubernetes DNS-1123 label


class Section(BaseModel):
    """Base of every spec section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskSpec(Section):
    type: Literal["causal-lm", "text-classification"]
    instruction_field: str = "instruction"
    response_field: str = "response"
    text_field: str = "text"
    label_field: str = "label"
    id_field: str | None = None
    labels: list[str] = []
    # None: the tokenizer's chat template; otherwise a str.format template with {instruction}.
    prompt_template: str | None = None
    system_prompt: str | None = None
    max_length: PositiveInt = 256

    @model_validator(mode="after")
    def _check(self) -> "TaskSpec":
        if self.type == "text-classification":
            if len(self.labels) < 2:
                raise ValueError("`task.labels` needs at least two labels for text-classification, "
                                 f"got {len(self.labels)}; list the classes, e.g. [negative, positive]")
            if len(set(self.labels)) != len(self.labels):
                raise ValueError("`task.labels` has duplicates; list each class once")
        if self.prompt_template is not None and "{instruction}" not in self.prompt_template:
            raise ValueError("`task.prompt_template` must contain {instruction}; "
                             "add it where the user's request goes")
        return self

    @property
    def fields(self) -> tuple[str, str]:
        """The (input, target) fields of a row of this task."""
        if self.type == "causal-lm":
            return self.instruction_field, self.response_field
        return self.text_field, self.label_field


class DataSource(Section):
    uri: str
    format: Literal["auto", "jsonl", "csv", "tsv", "parquet", "datasets", "chatterbot-yaml"] = "auto"
    # Task field -> column in this source, e.g. {text: review, label: rating}.
    columns: dict[str, str] = {}
    # Map raw values of the label column to task labels, e.g. {"1": negative}.
    label_map: dict[str, str] = {}
    # Files inside a directory or archive source, as a glob; None reads them all.
    include: str | None = None
    name: str | None = None
    # Turn HTML character references in text (&#039;, &amp;) back into characters.
    unescape_html: bool = True


class SplitSpec(Section):
    train: Fraction = 0.8
    validation: Fraction = 0.1
    test: Fraction = 0.1
    # The field hashed to place a row in a split; None hashes the normalised input text.
    key: str | None = None
    salt: str = "aicd"

    @model_validator(mode="after")
    def _sum(self) -> "SplitSpec":
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"`data.split` ratios must add up to 1, got {total:g} "
                             f"(train {self.train:g} + validation {self.validation:g} + test {self.test:g})")
        return self


class QualitySpec(Section):
    max_bad_fraction: Fraction = 0.05
    min_tokens: NonNegInt = 1
    max_tokens: PositiveInt = 1024
    dedupe: bool = True


class DataSpec(Section):
    sources: Annotated[list[DataSource], Field(min_length=1)]
    split: SplitSpec = SplitSpec()
    quality: QualitySpec = QualitySpec()
    # Keep at most this many valid rows (in key-hash order, so stable as data grows).
    max_rows: PositiveInt | None = None


class Candidate(Section):
    name: Annotated[str, Field(pattern=_NAME)]
    uri: str
    prompt_template: str | None = None
    revision: str | None = None


class BehaviouralCheck(Section):
    name: str
    kind: Literal["invariance", "minimum-functionality"]
    # minimum-functionality: inputs with their expected output (label or substring).
    cases: list[dict[str, str]] = []
    # invariance: a perturbation applied to inputs whose prediction must not change.
    perturbation: Literal["lowercase", "uppercase", "strip-punctuation", "typo", "add-whitespace"] | None = None
    min_pass_rate: Fraction = 1.0


class GatesSpec(Section):
    # Absolute bounds: metric -> minimum (higher-is-better) or maximum (lower-is-better).
    thresholds: dict[str, float] = {}
    # Non-inferiority: metric -> largest tolerated loss against the champion.
    non_inferiority: dict[str, float] = {}
    # Require the primary metric to beat the champion significantly.
    require_improvement: bool = False
    confidence: Annotated[float, Field(gt=0.5, lt=1.0)] = 0.95


class MetricsSpec(Section):
    primary: str
    gates: GatesSpec = GatesSpec()
    slices: list[str] = []
    behavioural: list[BehaviouralCheck] = []
    split: Literal["validation", "test"] = "test"
    max_examples: PositiveInt | None = None
    bootstrap_samples: PositiveInt = 1000
    max_new_tokens: PositiveInt = 48
    seed: int = 0
    probe_prompts: list[str] = []
    # Leaderboard: metric -> weight, and hard constraints metric -> bound.
    selection_weights: dict[str, float] = {}
    constraints: dict[str, float] = {}


class MethodSpec(Section):
    name: Annotated[str, Field(pattern=_NAME)]
    method: Literal["lora", "dora", "rslora", "ia3", "full", "qlora"]
    r: PositiveInt = 8
    alpha: PositiveFloat = 16.0
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    target_modules: list[str] | None = None
    learning_rate: PositiveFloat | None = None


class ModelArchSpec(Section):
    """A model trained from scratch (stage 4): a small Llama by default."""

    architecture: Literal["llama"] = "llama"
    hidden_size: PositiveInt = 128
    num_layers: PositiveInt = 2
    num_heads: PositiveInt = 4
    intermediate_size: PositiveInt = 256
    vocab_size: PositiveInt = 4096
    max_position_embeddings: PositiveInt = 512

    @model_validator(mode="after")
    def _heads(self) -> "ModelArchSpec":
        if self.hidden_size % self.num_heads:
            raise ValueError(f"`training.from_scratch.hidden_size` ({self.hidden_size}) must be divisible "
                             f"by `num_heads` ({self.num_heads}); change one of them")
        return self


class CheckpointSpec(Section):
    every_steps: PositiveInt = 50
    keep: PositiveInt = 2
    # Root for checkpoints; a KFP retry finds them again under a key of spec and data.
    root: str = ".aicd/checkpoints"


class ResourcesSpec(Section):
    gpus: NonNegInt = 1
    gpu_type: str | None = None
    cpu: str = "4"
    memory: str = "16Gi"
    num_nodes: PositiveInt = 1
    procs_per_node: PositiveInt = 1


class TrainingSpec(Section):
    methods: Annotated[list[MethodSpec], Field(min_length=1)]
    learning_rate: PositiveFloat = 2e-4
    epochs: PositiveFloat = 1.0
    max_steps: PositiveInt | None = None
    batch_size: PositiveInt = 8
    gradient_accumulation: PositiveInt = 1
    warmup_ratio: Fraction = 0.05
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0
    scheduler: Literal["linear", "cosine", "constant"] = "cosine"
    seed: int = 0
    packing: bool = True
    group_by_length: bool = True
    early_stopping_patience: PositiveInt | None = None
    # Hyper-parameter search: field -> values, tried as a grid or sampled.
    search_space: dict[str, list[float | int | str]] = {}
    search_strategy: Literal["grid", "random"] = "grid"
    search_trials: PositiveInt = 4
    checkpoint: CheckpointSpec = CheckpointSpec()
    resources: ResourcesSpec = ResourcesSpec()
    from_scratch: ModelArchSpec | None = None

    @model_validator(mode="after")
    def _unique(self) -> "TrainingSpec":
        names = [m.name for m in self.methods]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"`training.methods` names must be unique, got {', '.join(dupes)} twice; rename one")
        return self


class GitOpsSpec(Section):
    repo: str
    branch: str = "main"
    path: str = "manifests/overlays/production"
    mode: Literal["push", "pull-request"] = "push"
    # Name of the Kubernetes Secret holding a token or SSH key (mounted as a file).
    credentials_secret: str | None = None
    author_name: str = "aicd"
    author_email: str = "aicd@localhost"
    max_retries: PositiveInt = 5
    ssh_accept_new_host_key: bool = Field(False, description=(
        "Accept an SSH host key seen for the first time. Off: the credentials Secret must hold `known_hosts`."))

    @model_validator(mode="after")
    def _path_inside(self) -> "GitOpsSpec":
        parts = Path(self.path).parts
        if self.path.startswith(("/", "\\")) or ".." in parts or not parts:
            raise ValueError(f"`delivery.gitops.path` must be a folder inside the repository, got {self.path!r}; "
                             "write a relative path without `..`, e.g. manifests/overlays/production")
        return self


class CanarySpec(Section):
    steps: Annotated[list[Annotated[int, Field(gt=0, le=100)]], Field(min_length=1)] = [10, 50, 100]
    interval_seconds: PositiveFloat = 300.0
    min_requests: PositiveInt = 50
    max_error_rate: Fraction = 0.01
    max_latency_ratio: PositiveFloat = 1.5
    min_feedback_score: Fraction | None = None
    max_failed_intervals: PositiveInt = 1

    @model_validator(mode="after")
    def _steps(self) -> "CanarySpec":
        s = self.steps
        if any(b <= a for a, b in zip(s, s[1:])) or s[-1] != 100:
            raise ValueError(f"`delivery.canary.steps` must rise strictly and end at 100, got {s}; "
                             "e.g. [10, 50, 100]")
        return self


class ServingSpec(Section):
    name: Annotated[str, Field(pattern=_NAME)] = "aicd-model"
    namespace: Annotated[str, Field(pattern=_NAME)] = "aicd"
    deployment_mode: Literal["Standard", "Serverless"] = "Standard"
    max_batch_size: PositiveInt = 8
    max_batch_wait_ms: Annotated[float, Field(ge=0)] = 10.0
    max_body_bytes: PositiveInt = 8 * 1024 * 1024
    max_new_tokens_limit: PositiveInt = 512
    admin_token_secret: str | None = None
    feedback_key_secret: str | None = Field(None, description=(
        "Secret whose `token` key signs request ids; every replica mounts it, so feedback reaching any replica "
        "is verified. Unset: each pod signs with its own random key."))
    feedback_token_secret: str | None = Field(None, description=(
        "Secret whose `token` key /v1/feedback requires as a bearer token. Unset: no token needed."))
    feedback_rate_per_minute: PositiveInt = Field(60, description="Feedback requests accepted per client a minute.")


class DeliverySpec(Section):
    gitops: GitOpsSpec
    canary: CanarySpec = CanarySpec()
    serving: ServingSpec = ServingSpec()
    prometheus_url: str = "http://127.0.0.1:9090"


class LabelingSpec(Section):
    url: str = "http://127.0.0.1:8080"
    project: str
    # Name of the Secret (or AICD_SECRET_* variable locally) holding the API token.
    token_secret: str = "label-studio-token"
    sampling: Literal["random", "stratified", "uncertainty"] = "random"
    batch_size: PositiveInt = 50
    generation_mode: Literal["rating", "pairwise"] = "rating"
    conflict_resolution: Literal["majority", "adjudicate"] = "majority"
    min_annotations: PositiveInt = 1
    # Regex patterns masked in feedback text, name -> pattern.
    pii_patterns: dict[str, str] = {
        "email": r"[\w.+-]+@[\w-]+\.[\w.-]+",
        "phone": r"\+?\d[\d ()-]{7,}\d",
    }
    # Continuous pipeline: retrain once this many new labeled or feedback rows arrived.
    retrain_min_new_rows: PositiveInt = 100

    @model_validator(mode="after")
    def _patterns(self) -> "LabelingSpec":
        for name, pattern in self.pii_patterns.items():
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(f"`labeling.pii_patterns.{name}` is not a valid regular expression "
                                 f"({err}); fix the pattern") from None
        return self


class Spec(Section):
    name: Annotated[str, Field(pattern=_NAME)]
    description: str = ""
    task: TaskSpec
    data: DataSpec
    candidates: Annotated[list[Candidate], Field(min_length=1)]
    metrics: MetricsSpec
    training: TrainingSpec
    delivery: DeliverySpec
    labeling: LabelingSpec | None = None

    @model_validator(mode="after")
    def _cross(self) -> "Spec":
        problems = _cross_problems(self)
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def candidate(self, name: str | None = None) -> Candidate:
        """The named candidate, or the first one (the default base model)."""
        for c in self.candidates:
            if name is None or c.name == name:
                return c
        known = ", ".join(c.name for c in self.candidates)
        raise SpecError([f"`candidates` has no candidate named {name!r}; known: {known}"])


def _cross_problems(spec: Spec) -> list[str]:
    """Checks that need more than one section."""
    problems = []
    task_metrics = CLASSIFICATION_METRICS if spec.task.type == "text-classification" else GENERATION_METRICS
    allowed = task_metrics | SYSTEM_METRICS
    hint = ", ".join(sorted(allowed))
    if spec.metrics.primary not in task_metrics:
        problems.append(f"`metrics.primary` must be a {spec.task.type} metric "
                        f"({', '.join(sorted(task_metrics))}), got {spec.metrics.primary!r}")
    for where, table in (("gates.thresholds", spec.metrics.gates.thresholds),
                         ("gates.non_inferiority", spec.metrics.gates.non_inferiority),
                         ("selection_weights", spec.metrics.selection_weights),
                         ("constraints", spec.metrics.constraints)):
        for metric in table:
            if metric not in allowed:
                problems.append(f"`metrics.{where}.{metric}` is not a metric of this task; use one of: {hint}")
    names = [c.name for c in spec.candidates]
    if len(set(names)) != len(names):
        problems.append("`candidates` names must be unique; rename the duplicates")
    return problems


def _describe(err: dict[str, Any]) -> str:
    """One pydantic error as a sentence naming the field, the problem and the fix."""
    loc = ".".join(str(p) for p in err["loc"])
    where = f"`{loc}`" if loc else "the spec"
    kind, ctx, got = err["type"], err.get("ctx", {}), err.get("input")
    if kind == "missing":
        return f"{where} is required; add it to the spec"
    if kind == "extra_forbidden":
        return f"{where} is not a known field; remove it or check its spelling"
    if kind == "greater_than" and ctx.get("gt") == 0 and isinstance(got, int):
        return f"{where} must be a positive integer, got {got!r}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values()))
        return f"{where} must be {op} {bound}, got {got!r}"
    if kind == "literal_error":
        return f"{where} must be one of {ctx.get('expected')}, got {got!r}"
    if kind == "string_pattern_mismatch":
        return (f"{where} must be lowercase letters, digits and '-' (a Kubernetes name), "
                f"got {got!r}")
    if kind == "too_short":
        return f"{where} must have at least {ctx.get('min_length')} item(s); add one"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"{where} must be an integer, got {got!r}"
    if kind in ("float_type", "float_parsing"):
        return f"{where} must be a number, got {got!r}"
    if kind in ("bool_type", "bool_parsing"):
        return f"{where} must be true or false, got {got!r}"
    if kind in ("string_type",):
        return f"{where} must be a string, got {got!r}"
    if kind in ("list_type",):
        return f"{where} must be a list, got {got!r}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"{where} must be a mapping, got {type(got).__name__}"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    return f"{where}: {err['msg']}"


def _problems(error: ValidationError) -> list[str]:
    out: list[str] = []
    for err in error.errors(include_url=False):
        for line in _describe(err).splitlines():
            if line not in out:
                out.append(line)
    return out


def parse_spec(data: Any, source: str = "spec") -> Spec:
    """Validate a spec given as a mapping; raise SpecError listing every problem."""
    if not isinstance(data, dict):
        raise SpecError([f"the spec must be a YAML mapping of sections, got {type(data).__name__}"], source)
    try:
        return Spec.model_validate(data)
    except ValidationError as err:
        raise SpecError(_problems(err), source) from None


def load_spec(path: str | Path) -> Spec:
    """Read and validate a spec YAML file."""
    path = Path(path)
    if not path.is_file():
        raise SpecError([f"{path} does not exist; pass the path of a spec.yaml"], str(path))
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise SpecError([f"not valid YAML: {err}"], str(path)) from None
    return parse_spec(data, str(path))


def spec_dict(spec: Spec) -> dict[str, Any]:
    """The plain dict pipelines pass around (JSON-serialisable, defaults filled in)."""
    return spec.model_dump(mode="json")
