"""The project spec: the one config of aicd (docs/design.md section 3).

One YAML file per product. :func:`load_spec` reads and validates it and raises a
:class:`~aicd.components.errors.SpecError` that lists every problem at once, each
naming the field, what was wrong and the fix. Every field has a description:
``aicd schema`` prints the JSON Schema, and docs/spec.md is generated from it. The CLI
validates the whole spec once; pipelines take its sections as separate parameters
(:mod:`aicd.components.contracts`).
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
    "nll": False, "perplexity": False, "preference_accuracy": True,
    # system
    "latency_p50_ms": False, "latency_p95_ms": False, "tokens_per_second": True,
    "peak_memory_mb": False, "model_size_mb": False, "adapter_size_mb": False,
}
CLASSIFICATION_METRICS = {"accuracy", "macro_f1"}
GENERATION_METRICS = {"exact_match", "token_f1", "rouge_l", "chrf", "bleu", "nll", "perplexity",
                      "preference_accuracy"}
SYSTEM_METRICS = set(METRICS) - CLASSIFICATION_METRICS - GENERATION_METRICS
# Scores reported as fractions in [0, 1] (chrF and BLEU are sacrebleu's 0-100 scores divided by 100).
FRACTION_METRICS = {"accuracy", "macro_f1", "exact_match", "token_f1", "rouge_l", "chrf", "bleu",
                    "preference_accuracy"}

PositiveInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
PositiveFloat = Annotated[float, Field(gt=0.0)]
_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"  # a Kubernetes DNS-1123 label


class Section(BaseModel):
    """Base of every spec section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskSpec(Section):
    type: Literal["causal-lm", "text-classification"] = Field(
        description=("What the model does: `causal-lm` (instruction tuning: generate a response) or "
                     "`text-classification` (choose one of `labels`)."))
    instruction_field: str = Field("instruction", description="causal-lm: the row field holding the user's request.")
    response_field: str = Field("response", description="causal-lm: the row field holding the reference answer.")
    text_field: str = Field("text", description="text-classification: the row field holding the text to classify.")
    label_field: str = Field("label", description="text-classification: the row field holding the label.")
    lowercase: bool = Field(False, description=(
        "text-classification: lower-case every text before the tokenizer, for a cased tokenizer (a decoder's) "
        "where case says nothing about the label: a shouted text then reads as the same tokens. The trained "
        "model's saved tokenizer carries it, so evaluation and serving lower-case too. An uncased tokenizer "
        "(BERT's) already does."))
    text_template: str | None = Field(None, description=(
        "text-classification: a str.format template with {text} once, the words the model reads around each "
        "text, e.g. \"{text}\\nThe sentiment of this review is\". A decoder's classifier reads its last "
        "token's state, so a template that ends in a question about the label makes that state about the "
        "label (and `training.head_init: label-words` can start the head from the model's own answer). The "
        "template's tokens are added by the tokenizer's post-processor, which the trained model's saved "
        "tokenizer carries: evaluation and serving wrap texts as training did, and truncation to "
        "`max_length` shortens the text, never the template. Null reads the text alone."))
    id_field: str | None = Field(
        None, description=("A row field with a stable id (kept through labeling and feedback); null derives "
                           "ids from the content."))
    labels: list[str] = Field([], description="text-classification: the classes, at least two, each once.")
    prompt_template: str | None = Field(
        None, description=("A str.format template with {instruction} for the model's input; null uses the "
                           "tokenizer's chat template."))
    system_prompt: str | None = Field(
        None, description="causal-lm: a system message put before every request (chat template only).")
    max_length: PositiveInt = Field(
        256, description="The most tokens of one example (input and target); longer rows are quarantined as too long.")

    @model_validator(mode="after")
    def _check(self) -> "TaskSpec":
        if self.type == "text-classification":
            if len(self.labels) < 2:
                raise ValueError("`task.labels` needs at least two labels for text-classification, "
                                 f"got {len(self.labels)}; list the classes, e.g. [negative, positive]")
            if len(set(self.labels)) != len(self.labels):
                raise ValueError("`task.labels` has duplicates; list each class once")
        elif self.lowercase:
            raise ValueError("`task.lowercase` applies to text-classification only; remove it for a causal-lm task "
                             "(an answer's case is part of what the model learns to write)")
        elif self.text_template is not None:
            raise ValueError("`task.text_template` applies to text-classification only; use `task.prompt_template` "
                             "with {instruction} for a causal-lm task")
        if self.text_template is not None:
            _check_text_template(self.text_template)
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


def _check_text_template(template: str) -> None:
    import string

    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as err:
        raise ValueError(f"`task.text_template` is not a str.format template ({err}); write literal braces as "
                         "{{ and }}") from None
    if fields != ["text"]:
        raise ValueError(f"`task.text_template` must contain {{text}} exactly once and no other field, got "
                         f"{fields or 'none'}; e.g. \"{{text}}\\nThe sentiment of this review is\"")
    if not template.replace("{text}", "", 1).strip():
        raise ValueError("`task.text_template` adds no words around {text}; remove it or write the question, "
                         "e.g. \"{text}\\nThe sentiment of this review is\"")


class DataSource(Section):
    uri: str = Field(
        description=("Where the data is: a local path or a pkg://, pvc://, hf://, s3:// or gs:// URI "
                     "(file, folder or archive)."))
    format: Literal["auto", "jsonl", "csv", "tsv", "parquet", "datasets", "chatterbot-yaml"] = Field(
        "auto", description="The file format; `auto` guesses from the file name.")
    columns: dict[str, str] = Field(
        {}, description="Task field -> column of this source, e.g. {text: review, label: rating}.")
    label_map: dict[str, str] = Field(
        {}, description="Raw values of the label column -> task labels, e.g. {\"1\": negative}.")
    include: str | None = Field(
        None, description="Files inside a folder or archive source, as a glob; null reads them all.")
    name: str | None = Field(
        None, description="A short name for this source in cards and reports; null derives one from the URI.")
    unescape_html: bool = Field(
        True, description="Turn HTML character references in text (&#039;, &amp;) back into characters.")


class SplitSpec(Section):
    train: Fraction = Field(0.8, description="Fraction of rows for training.")
    validation: Fraction = Field(0.1, description="Fraction of rows for validation (method choice, early stopping).")
    test: Fraction = Field(0.1, description="Fraction of rows for the test split the gate evaluates on.")
    key: str | None = Field(
        None, description="The field hashed to place a row in a split; null hashes the normalised input text.")
    salt: str = Field("aicd", description="Salt of the split hash; change it to draw a different split.")

    @model_validator(mode="after")
    def _sum(self) -> "SplitSpec":
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"`data.split` ratios must add up to 1, got {total:g} "
                             f"(train {self.train:g} + validation {self.validation:g} + test {self.test:g})")
        return self


class QualitySpec(Section):
    max_bad_fraction: Fraction = Field(
        0.05, description="Ingest fails when more than this fraction of rows is quarantined.")
    min_tokens: NonNegInt = Field(1, description="Rows with fewer input tokens are quarantined.")
    max_tokens: PositiveInt = Field(1024, description="Rows with more input tokens are quarantined.")
    dedupe: bool = Field(True, description="Quarantine exact and near duplicates of earlier rows.")


class DataSpec(Section):
    sources: Annotated[list[DataSource], Field(min_length=1)] = Field(
        description="The data sources, read in order; at least one.")
    split: SplitSpec = Field(
        SplitSpec(), description="How rows are split into train, validation and test (by a stable hash).")
    quality: QualitySpec = Field(QualitySpec(), description="Quality thresholds of ingest.")
    max_rows: PositiveInt | None = Field(
        None, description=("Keep at most this many valid rows (in key-hash order, so stable as data grows); "
                           "null keeps all."))
    row_hash: Literal["v1", "v2"] = Field("v1", description=(
        "How row ids, splits and duplicate digests are hashed; recorded in the data set card. `v2` (xxh3, "
        "fewer digests a row) is about twice as fast but gives other ids and splits than `v1`, so a spec keeps "
        "the scheme its data sets were made with: absent means `v1`, the scheme of every data set made before "
        "this field existed; ingest refuses a parent data set of another scheme. Start new specs with `v2`."))


class Candidate(Section):
    name: Annotated[str, Field(pattern=_NAME)] = Field(
        description="A short name (a Kubernetes name: lowercase letters, digits, '-').")
    uri: str = Field(description="Where the model is: a local path or a pkg://, pvc://, hf://, s3:// or gs:// URI.")
    prompt_template: str | None = Field(
        None, description=("This candidate's own prompt template (with {instruction}); null uses "
                           "`task.prompt_template`."))
    revision: str | None = Field(None, description="A model revision (commit or tag) for hub URIs.")
    digest: Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")] | None = Field(None, description=(
        "Pins what `uri` holds: the card digest of an aicd artifact, or the content digest of a folder "
        "without card.json (sha256 over its files' sha256s; `aicd digest PATH` prints it). With a pin the "
        "model loads only when it matches. null: the folder's own card.json must verify (pkg:// models: "
        "the installed distribution's RECORD); a local, file:// or pvc:// folder without a card is refused."))


class BehaviouralCheck(Section):
    name: str = Field(description="The check's name in reports and gates.")
    kind: Literal["invariance", "minimum-functionality"] = Field(
        description=("`invariance` (a perturbation must not change the prediction) or "
                     "`minimum-functionality` (cases with expected outputs)."))
    cases: list[dict[str, str]] = Field(
        [], description="minimum-functionality: inputs with their expected output (label or substring).")
    perturbation: Literal["lowercase", "uppercase", "strip-punctuation", "typo", "add-whitespace"] | None = Field(
        None, description="invariance: the perturbation applied to inputs whose prediction must not change.")
    min_pass_rate: Fraction = Field(1.0, description="The fraction of cases that must pass for the gate.")


class GatesSpec(Section):
    thresholds: dict[str, float] = Field(
        {}, description="Absolute bounds: metric -> minimum (higher-is-better) or maximum (lower-is-better).")
    non_inferiority: dict[str, float] = Field(
        {}, description="Non-inferiority against the champion: metric -> largest tolerated loss.")
    require_improvement: bool = Field(
        False, description="Require the primary metric to beat the champion significantly.")
    superiority: dict[str, Annotated[float, Field(ge=0.0)]] = Field({}, description=(
        "Superiority: metric -> margin. The paired interval of candidate minus champion must lie wholly on the "
        "better side of `margin` (0: any significant improvement), e.g. {nll: 0.0}."))
    confidence: Annotated[float, Field(gt=0.5, lt=1.0)] = Field(
        0.95, description="Confidence level of the bootstrap intervals the gates use.")


class MetricsSpec(Section):
    primary: str = Field(description="The metric that ranks models and methods (a metric of the task type).")
    gates: GatesSpec = Field(GatesSpec(), description="What a candidate must meet to be promoted.")
    slices: list[str] = Field([], description="Row fields to report metrics per value of (e.g. topic).")
    behavioural: list[BehaviouralCheck] = Field([], description="Behavioural checks run with every evaluation.")
    split: Literal["validation", "test"] = Field("test", description="The split the gate evaluates on.")
    max_examples: PositiveInt | None = Field(
        None, description="Evaluate at most this many examples; null evaluates the whole split.")
    bootstrap_samples: PositiveInt = Field(1000, description="Bootstrap resamples of every confidence interval.")
    max_new_tokens: PositiveInt = Field(48, description="causal-lm: the most tokens generated per answer.")
    seed: int = Field(0, description="Seed of sampling and bootstrap.")
    probe_prompts: list[str] = Field(
        [], description="Prompts whose answers are shown for a quick look (demo, probe of an adapter).")
    selection_weights: dict[str, float] = Field(
        {}, description="Leaderboard score: metric -> weight; empty uses the primary metric alone.")
    constraints: dict[str, float] = Field(
        {}, description="Leaderboard hard constraints: metric -> bound (minimum or maximum by the metric's direction).")


class MethodSpec(Section):
    name: Annotated[str, Field(pattern=_NAME)] = Field(
        description="A short name of this method's run (a Kubernetes name).")
    method: Literal["lora", "dora", "rslora", "ia3", "full", "qlora", "dpo"] = Field(description=(
        "How to train: a peft adapter (lora, dora, rslora, ia3, qlora (GPU)), all weights (full), or dpo: a LoRA "
        "adapter trained on the train split's preference pairs (prompt/chosen/rejected) with the DPO loss."))
    r: PositiveInt = Field(8, description="LoRA rank.")
    alpha: PositiveFloat = Field(16.0, description="LoRA scaling alpha.")
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(0.0, description="LoRA dropout.")
    target_modules: list[str] | None = Field(
        None, description="Module names to adapt; null uses the architecture's defaults.")
    learning_rate: PositiveFloat | None = Field(
        None, description="This method's learning rate; null uses `training.learning_rate`.")
    beta: PositiveFloat = Field(0.1, description="dpo: how far the policy may move from the reference model "
                                                 "(larger keeps it closer).")


class ModelArchSpec(Section):
    """A model trained from scratch (stage 4): a small Llama by default."""

    architecture: Literal["llama"] = Field("llama", description="The architecture of the model trained from scratch.")
    hidden_size: PositiveInt = Field(128, description="Hidden size (divisible by num_heads).")
    num_layers: PositiveInt = Field(2, description="Number of transformer layers.")
    num_heads: PositiveInt = Field(4, description="Number of attention heads.")
    intermediate_size: PositiveInt = Field(256, description="Size of the feed-forward layer.")
    vocab_size: PositiveInt = Field(4096, description="Size of the tokenizer trained on the data.")
    max_position_embeddings: PositiveInt = Field(512, description="The longest sequence the model takes.")

    @model_validator(mode="after")
    def _heads(self) -> "ModelArchSpec":
        if self.hidden_size % self.num_heads:
            raise ValueError(f"`training.from_scratch.hidden_size` ({self.hidden_size}) must be divisible "
                             f"by `num_heads` ({self.num_heads}); change one of them")
        return self


class CheckpointSpec(Section):
    every_steps: PositiveInt = Field(50, description="Save a checkpoint every this many optimizer steps.")
    keep: PositiveInt = Field(2, description="Keep this many latest checkpoints.")
    root: str = Field(
        ".aicd/checkpoints",
        description="Root folder of checkpoints; a KFP retry finds them again under a key of spec and data.")


class ResourcesSpec(Section):
    gpus: NonNegInt = Field(1, description="GPUs per training node.")
    gpu_type: str | None = Field(None, description="The GPU type (node selector), e.g. nvidia-l4; null any.")
    cpu: str = Field("4", description="CPU request of a training pod (Kubernetes quantity).")
    memory: str = Field("16Gi", description="Memory request of a training pod (Kubernetes quantity).")
    num_nodes: PositiveInt = Field(1, description="Training nodes (more than one runs as a Kubeflow Trainer TrainJob).")
    procs_per_node: PositiveInt = Field(1, description="Training processes per node.")


class TrainingSpec(Section):
    methods: Annotated[list[MethodSpec], Field(min_length=1)] = Field(
        description="The fine-tuning methods trained and compared; the first is the default.")
    learning_rate: PositiveFloat = Field(2e-4, description="Peak learning rate.")
    epochs: PositiveFloat = Field(1.0, description="Passes over the training split (ignored when max_steps is set).")
    max_steps: PositiveInt | None = Field(
        None, description="Stop after this many optimizer steps; null trains `epochs`.")
    batch_size: PositiveInt = Field(8, description="Examples per device step.")
    gradient_accumulation: PositiveInt = Field(1, description="Device steps per optimizer step.")
    warmup_ratio: Fraction = Field(0.05, description="Fraction of steps of learning-rate warm-up.")
    weight_decay: Annotated[float, Field(ge=0.0)] = Field(0.0, description="AdamW weight decay.")
    scheduler: Literal["linear", "cosine", "constant"] = Field(
        "cosine", description="Learning-rate schedule after warm-up.")
    seed: int = Field(0, description="Seed of initialisation and data order.")
    packing: bool = Field(True, description="Pack short examples into full sequences.")
    group_by_length: bool = Field(True, description="Batch examples of similar length together.")
    early_stopping_patience: PositiveInt | None = Field(None, description=(
        "Validate on the validation split every `checkpoint.every_steps` steps (and at the last), keep the "
        "weights of the lowest validation loss (class-weighted as training is), and stop after this many "
        "validations without improvement; null never stops early. Training from scratch always validates "
        "and keeps the best weights; a fine-tuning method other than `dpo` does when this is set."))
    class_weighting: Literal["none", "balanced"] = Field("none", description=(
        "Text classification: `balanced` weights each class's loss by n / (classes * count), so a rare class "
        "counts as much as the majority (for macro-F1); `none` weights every example the same."))
    uppercase_augmentation: Fraction = Field(0.0, description=(
        "Text classification: this share of the training rows (a seeded draw) is added again in upper case, "
        "for a cased model to learn that a shouted text means what it says in lower case (the behavioural "
        "check with `perturbation: uppercase`); 0 adds none. It teaches, it does not guarantee: "
        "`task.lowercase` makes a classifier case-blind by construction."))
    head_init: Literal["random", "label-words", "linear-probe"] = Field("random", description=(
        "Text classification: how the new head starts. `linear-probe` fits it first to the frozen model's "
        "features of the training rows (with the class weights), so fine-tuning starts from the probe's "
        "answer (LP-FT; needs a linear head). `label-words` (a decoder, its head `score` on the last token) "
        "starts each class's row from the model's output embedding of the label's first token, so before "
        "any step the classifier is the model's own next-token choice among the labels (with "
        "`task.text_template` asking the question, a zero-shot classifier). Either head then trains at the "
        "method's rate unless `head_learning_rate` is set. `random`: transformers' initialisation."))
    head_learning_rate: PositiveFloat | None = Field(None, description=(
        "Text classification with an adapter: learning rate of the new classification head (and pooler), which "
        "starts random and must move much further than the adapter weights. Default: 20x the method's rate; the "
        "method's rate with `head_init: label-words` or `linear-probe` (that head starts at an answer)."))
    layer_lr_decay: Annotated[float, Field(gt=0.0, le=1.0)] | None = Field(None, description=(
        "Full fine-tuning: layer-wise learning-rate decay. The head trains at the method's rate, encoder layer "
        "i of n at rate * decay^(n - i) and the embeddings lowest, so pre-trained features move least on "
        "small data; null (or 1) trains every weight at one rate."))
    search_space: dict[str, list[float | int | str]] = Field(
        {}, description="Hyper-parameter search: field -> values, tried as a grid or sampled.")
    search_strategy: Literal["grid", "random"] = Field(
        "grid", description="`grid` tries every combination, `random` samples `search_trials` of them.")
    search_trials: PositiveInt = Field(4, description="The most trials of the search.")
    checkpoint: CheckpointSpec = Field(CheckpointSpec(), description="Checkpointing and resume.")
    resources: ResourcesSpec = Field(ResourcesSpec(), description="What one training step asks the cluster for.")
    from_scratch: ModelArchSpec | None = Field(
        None, description="Stage 4: the architecture of a model trained from scratch; null for adapters only.")

    @model_validator(mode="after")
    def _unique(self) -> "TrainingSpec":
        names = [m.name for m in self.methods]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"`training.methods` names must be unique, got {', '.join(dupes)} twice; rename one")
        if self.layer_lr_decay not in (None, 1.0) and not any(m.method == "full" for m in self.methods):
            raise ValueError("`training.layer_lr_decay` applies to full fine-tuning only, and no method in "
                             "`training.methods` has `method: full`; add one, or remove `layer_lr_decay`")
        return self


class GitOpsSpec(Section):
    repo: str = Field(
        description=("The GitOps repository promotions commit to: a URL, or a local path (create one "
                     "with `aicd init-gitops PATH`)."))
    branch: str = Field("main", description="The branch Argo CD syncs from.")
    path: str = Field("manifests/overlays/production", description="The kustomize overlay the InferenceService is in.")
    mode: Literal["push", "pull-request"] = Field(
        "push", description="`push` commits to the branch; `pull-request` pushes a branch for review.")
    credentials_secret: str | None = Field(
        None, description="The Kubernetes Secret holding a token or SSH key (mounted as a file); null for none.")
    author_name: str = Field("aicd", description="Author name of promotion commits.")
    author_email: str = Field("aicd@localhost", description="Author email of promotion commits.")
    retry_seconds: PositiveFloat = Field(300.0, description=(
        "How long a change keeps fetching, rebasing (its checks run again on the new tip) and pushing while "
        "other promotions or rollouts move the branch, with jittered backoff between attempts."))
    max_retries: PositiveInt | None = Field(None, description=(
        "At most this many fetch-rebase-push attempts; null: as many as fit in `retry_seconds`."))
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
    steps: Annotated[list[Annotated[int, Field(gt=0, le=100)]], Field(min_length=1)] = Field(
        [10, 50, 100], description="Canary traffic percentages, rising strictly and ending at 100.")
    interval_seconds: PositiveFloat = Field(300.0, description="Seconds between two analyses of the canary.")
    min_requests: PositiveInt = Field(50, description="Requests the canary must serve in an interval for a decision.")
    max_error_rate: Fraction = Field(0.01, description="Roll back when the canary's error rate exceeds this.")
    max_latency_ratio: PositiveFloat = Field(
        1.5, description="Roll back when the canary's p95 latency exceeds the stable one's by this factor.")
    min_feedback_score: Fraction | None = Field(
        None, description="Roll back when the canary's mean feedback score falls below this; null ignores feedback.")
    max_failed_intervals: PositiveInt = Field(1, description="Failed intervals tolerated before rolling back.")
    max_client_error_rate: Fraction = Field(
        0.05, description="how far the canary's 4xx ratio may exceed the stable model's in the same window "
                          "(max_error_rate is the same margin for 5xx)")
    min_traffic_share: Fraction = Field(
        0.25, description="fraction of its expected requests (traffic step x all requests) the canary must answer; "
                          "fewer fails the interval (a hanging canary answers none)")
    max_inconclusive_intervals: PositiveInt = Field(
        12, description="inconclusive intervals (too little traffic) after which the rollout ends by "
                        "inconclusive_policy")
    inconclusive_policy: Literal["rollback", "promote"] = Field(
        "rollback", description="how a rollout that stayed inconclusive for max_inconclusive_intervals ends")

    @model_validator(mode="after")
    def _steps(self) -> "CanarySpec":
        s = self.steps
        if any(b <= a for a, b in zip(s, s[1:], strict=False)) or s[-1] != 100:
            raise ValueError(f"`delivery.canary.steps` must rise strictly and end at 100, got {s}; "
                             "e.g. [10, 50, 100]")
        return self


class ServingSpec(Section):
    name: Annotated[str, Field(pattern=_NAME)] = Field("aicd-model", description="The InferenceService's name.")
    namespace: Annotated[str, Field(pattern=_NAME)] = Field(
        "aicd", description="The namespace the InferenceService runs in.")
    deployment_mode: Literal["Standard", "Serverless"] = Field(
        "Standard", description=("KServe deployment mode: `Standard` (raw, the canary in Git) or `Serverless` "
                                 "(Knative)."))
    max_batch_size: PositiveInt = Field(8, description="The predictor's largest dynamic batch.")
    max_batch_wait_ms: Annotated[float, Field(ge=0)] = Field(
        10.0, description="How long the predictor waits to fill a batch.")
    max_body_bytes: PositiveInt = Field(8 * 1024 * 1024, description="The largest request body the predictor accepts.")
    max_new_tokens_limit: PositiveInt = Field(512, description="The most new tokens a request may ask for.")
    max_n: Annotated[int, Field(ge=1, le=64)] = Field(
        4, description="The most choices (OpenAI `n`) a request may ask for per prompt.")
    mix_adapters: bool = Field(False, description=(
        "Batch generation requests of different adapters together, one forward pass per step (peft's "
        "mixed-adapter batches); false: a batch holds one adapter's requests."))
    admin_token_secret: str | None = Field(
        None, description="The Kubernetes Secret with the predictor's admin token; null disables the admin API.")
    feedback_key_secret: str | None = Field(None, description=(
        "Secret whose `token` key signs request ids; every replica mounts it, so feedback reaching any replica "
        "is verified. Unset: each pod signs with its own random key."))
    feedback_token_secret: str | None = Field(None, description=(
        "Secret whose `token` key /v1/feedback requires as a bearer token. Unset: no token needed."))
    feedback_rate_per_minute: PositiveInt = Field(60, description="Feedback requests accepted per client a minute.")


class SyncSpec(Section):
    via: Literal["none", "inferenceservice", "argocd"] = Field(
        "none", description="what tells the rollout that a commit is live before it measures: the Argo CD "
                            "Application synced and healthy at that revision, the InferenceService Ready with "
                            "the declared canary, or nothing (local runs)")
    application: str | None = Field(None, description="Argo CD Application name (default: delivery.serving.name)")
    application_namespace: str = Field("argocd", description="namespace of the Argo CD Application")
    timeout_seconds: PositiveFloat = Field(
        600.0, description="how long a commit may take to become live and Ready; a canary not Ready by then is "
                           "rolled back")
    poll_seconds: PositiveFloat = Field(5.0, description="how often the rollout polls the cluster while waiting")
    kubeconfig: str | None = Field(None, description="kubeconfig file (default: in-cluster, else $KUBECONFIG)")


class EnvironmentSpec(Section):
    name: Annotated[str, Field(pattern=_NAME, description="the stage's name, e.g. dev, staging, production")]
    path: str = Field(description="its overlay folder in the GitOps repository")
    mode: Literal["push", "pull-request"] = Field(
        "push", description="push: the candidate enters the stage by a commit on the branch; pull-request: by a "
                            "pushed branch and a pull request a person merges")


class ForgeSpec(Section):
    kind: Literal["github", "gitlab"] = Field(description="the forge whose API opens pull (merge) requests")
    api_url: str = Field(description="its API root, e.g. https://api.github.com or https://gitlab.example/api/v4")
    project: str = Field(description="owner/name of the GitOps repository on the forge")
    token_secret: str = Field("gitops-forge-token", description="Secret (key `token`) with an API token")


class DeliverySpec(Section):
    gitops: GitOpsSpec = Field(description="Where promotions are committed.")
    canary: CanarySpec = Field(CanarySpec(), description="How a canary is stepped up and analysed.")
    serving: ServingSpec = Field(ServingSpec(), description="The InferenceService and its predictor.")
    prometheus_url: str = Field("http://127.0.0.1:9090", description="The Prometheus the canary analysis reads.")
    sync: SyncSpec = Field(SyncSpec(), description="waiting for the GitOps sync before each analysis")
    environments: list[EnvironmentSpec] = Field(
        [], description="ordered stages a candidate moves through (its rollout in one verified before it enters "
                        "the next); the first is gitops.path. Empty: the single overlay gitops.path")
    forge: ForgeSpec | None = Field(None, description="opens the pull request of a pull-request stage; without "
                                                      "it the branch is pushed and the rollout says so")
    rollout: Literal["pipeline", "external"] = Field(
        "pipeline", description="pipeline: finetune and continuous drive a new canary to promotion or rollback "
                                "after promoting it; external: the rollout pipeline or `aicd canary` runs apart")

    @model_validator(mode="after")
    def _environments(self) -> "DeliverySpec":
        envs = self.environments
        if envs and envs[0].path != self.gitops.path:
            raise ValueError(f"`delivery.environments[0].path` ({envs[0].path}) must be `delivery.gitops.path` "
                             f"({self.gitops.path}): a candidate enters the first stage; set both to the same overlay")
        names, paths = [e.name for e in envs], [e.path for e in envs]
        if len(set(names)) != len(names) or len(set(paths)) != len(paths):
            raise ValueError("`delivery.environments` names and paths must be unique; give each stage its own overlay")
        if any(e.mode == "pull-request" for e in envs[:-1]):
            raise ValueError("only the last of `delivery.environments` can be `mode: pull-request`; the earlier "
                             "stages are verified by their rollout")
        return self


class LabelingSpec(Section):
    url: str = Field("http://127.0.0.1:8080", description="The Label Studio server.")
    project: str = Field(description="The Label Studio project title.")
    token_secret: str = Field(
        "label-studio-token",
        description=("The Secret (key `token`; locally the variable AICD_SECRET_<NAME>_TOKEN) holding the Label "
                     "Studio API token: a personal access token (user icon > Account & Settings > Personal Access "
                     "Token), or a legacy token where the organization enables legacy tokens."))
    token_kind: Literal["auto", "personal", "legacy"] = Field(
        "auto", description=("The kind of token in `token_secret`: `personal` (a personal access token, a JWT "
                             "exchanged for short-lived Bearer access tokens; Label Studio 1.23's default), "
                             "`legacy` (`Authorization: Token`, accepted only where an organization enables legacy "
                             "tokens), or `auto` (read from the token's form)."))
    sampling: Literal["random", "stratified", "uncertainty"] = Field(
        "random", description="How rows are chosen for labeling: random, stratified by label, or by model uncertainty.")
    batch_size: PositiveInt = Field(50, description="Rows sent for labeling per run.")
    generation_mode: Literal["rating", "pairwise"] = Field(
        "rating", description="causal-lm: rate one answer, or compare two (pairwise).")
    conflict_resolution: Literal["majority", "adjudicate"] = Field(
        "majority", description="How disagreeing annotations are resolved: majority vote, or send to adjudication.")
    min_annotations: PositiveInt = Field(1, description="Annotations a task needs before its label is used.")
    pii_patterns: dict[str, str] = Field({
        "email": r"[\w.+-]+@[\w-]+\.[\w.-]+",
        "phone": r"\+?\d[\d ()-]{7,}\d",
    }, description="Regex patterns masked in feedback text: name -> pattern.")
    retrain_min_new_rows: PositiveInt = Field(
        100, description="Continuous pipeline: retrain once this many new labeled or feedback rows arrived.")
    retrain_min_new_pairs: PositiveInt = Field(
        20, description=("Continuous pipeline: train the spec's dpo methods once this many new preference pairs "
                         "(labeled pairs, corrections, thumbs-up beating thumbs-down) arrived."))

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
    name: Annotated[str, Field(pattern=_NAME)] = Field(
        description="The product's name (a Kubernetes name): labels, run and project names.")
    description: str = Field("", description="What the product's model does, in a sentence.")
    task: TaskSpec = Field(description="What the model does and the fields of a row.")
    data: DataSpec = Field(description="Where the data comes from and how it is split and checked.")
    candidates: Annotated[list[Candidate], Field(min_length=1)] = Field(
        description="Foundation models to try, by URI; the first is the base model fine-tuning starts from.")
    metrics: MetricsSpec = Field(description="How models are evaluated, compared, selected and gated.")
    training: TrainingSpec = Field(description="How adapters (and custom models) are trained.")
    delivery: DeliverySpec = Field(description="How a blessed model is promoted through Git, served and canaried.")
    labeling: LabelingSpec | None = Field(
        None, description="Label Studio and feedback; null for a spec without labeling.")

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

    def pin(self, uri: str) -> str | None:
        """The digest a candidate with this ``uri`` pins (``candidates[].digest``), or None."""
        return next((c.digest for c in self.candidates if c.uri == uri and c.digest), None)


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
                         ("gates.superiority", spec.metrics.gates.superiority),
                         ("selection_weights", spec.metrics.selection_weights),
                         ("constraints", spec.metrics.constraints)):
        for metric in table:
            if metric not in allowed:
                problems.append(f"`metrics.{where}.{metric}` is not a metric of this task; use one of: {hint}")
    problems += _scale_problems(spec.metrics.gates)
    if spec.training.uppercase_augmentation and spec.task.type != "text-classification":
        problems.append("`training.uppercase_augmentation` applies to text-classification only; "
                        f"remove it for a {spec.task.type} task")
    if spec.training.head_init != "random" and spec.task.type != "text-classification":
        problems.append("`training.head_init` applies to text-classification only (a causal LM keeps its own "
                        f"head); remove it for a {spec.task.type} task")
    names = [c.name for c in spec.candidates]
    if len(set(names)) != len(names):
        problems.append("`candidates` names must be unique; rename the duplicates")
    return problems


def _scale_problems(gates: GatesSpec) -> list[str]:
    """A gate on a [0, 1] metric given on the 0-100 scale (chrF 10 meaning 0.1) could never bind."""
    problems = []
    for where, table in (("thresholds", gates.thresholds), ("non_inferiority", gates.non_inferiority),
                         ("superiority", gates.superiority)):
        for metric, value in table.items():
            if metric in FRACTION_METRICS and abs(value) > 1:
                problems.append(f"`metrics.gates.{where}.{metric}` is {value:g}, but {metric} is a fraction in "
                                f"[0, 1] (chrF and BLEU are sacrebleu's scores / 100); write {value / 100:g} for "
                                f"{value:g} points")
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
