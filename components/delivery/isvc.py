"""The overlay's InferenceService: the whole rollout state, as one YAML file in Git.

Standard (raw) mode, KServe 0.20+: the champion is ``spec.predictor`` and the
candidate is the single entry of the ``spec.canary`` list with its
``trafficPercent``. Serverless (Knative) mode: the candidate replaces
``spec.predictor`` with ``canaryTrafficPercent``, and the champion's predictor is
kept in the annotation ``aicd.dev/stable-predictor`` so a rollback restores it from
Git. Every predictor carries its model identity in the annotation
``aicd.dev/model-id`` (an artifact digest, ``base:<uri>`` for a bare base model, or
``base:<uri>#<mode>:<hash of the shots>`` for a base model served few-shot), and the spec's
prompt settings as arguments (``--system-prompt``, ``--prompt-template``, ``--few-shot``),
its role in the label ``aicd.dev/role`` (``stable`` | ``canary``) and the service
(``delivery.serving.name``) in ``aicd.dev/service``; the monitoring component turns
these into the ``role`` and ``isvc`` labels the canary analysis selects on.
"""

import copy
import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

import yaml

from aicd.components.errors import DeliveryError
from aicd.components.serving.config import MODEL_ROOT
from aicd.components.serving.prompts import PromptSettings, prompt_flags, shots_arg
from aicd.components.spec import Spec

ISVC_FILE = "inferenceservice.yaml"
MODEL_ID = "aicd.dev/model-id"
ROLE = "aicd.dev/role"
SERVICE = "aicd.dev/service"
STABLE_PREDICTOR = "aicd.dev/stable-predictor"
MODE = "serving.kserve.io/deploymentMode"
PROMPT_FLAGS = ("--system-prompt", "--prompt-template", "--few-shot")
# URIs KServe's storage initializer fetches (with the predictor service account's credentials) into
# MODEL_ROOT; the predictor gets the in-pod path and still verifies the card. pkg:// and local
# paths stay arguments (models inside the image; the local default).
STORAGE_SCHEMES = ("s3://", "gs://", "hf://", "pvc://", "https://", "http://", "oci://")
# The GPU runtime for LLMs (manifests/components/vllm): KServe's Hugging Face server with the vLLM
# backend serves the same promoted adapters; an overlay picks it with `model.runtime`.
VLLM_RUNTIME = "aicd-vllm"
_BASE_MODE = re.compile(r"^(?P<uri>.+)#(?P<mode>[a-z0-9][-a-z0-9]*)(?::(?P<hash>[0-9a-f]+))?$")


@dataclass(frozen=True)
class ModelRef:
    """What a predictor serves: a base model, optionally with one adapter, and how it is prompted
    (``prompt_template``, and for a base model chosen few-shot its leaderboard ``mode`` and ``shots``)."""

    model_id: str
    base_uri: str
    adapter_uri: str | None = None
    adapter_name: str | None = None
    prompt_template: str | None = None
    mode: str | None = None
    shots: tuple[tuple[str, str], ...] = ()


def shots_hash(shots) -> str:
    """A short hash of few-shot examples (of their ``--few-shot`` argument)."""
    return hashlib.sha256(shots_arg(shots).encode("utf-8")).hexdigest()[:12]


def base_model_id(uri: str, mode: str | None = None, shots=()) -> str:
    """The identity of a bare base model: ``base:<uri>``, or ``base:<uri>#<mode>:<hash>`` when served
    with few-shot examples (a different behaviour, so a different model)."""
    if not shots:
        return f"base:{uri}"
    return f"base:{uri}#{mode or f'few-shot-{len(shots)}'}:{shots_hash(shots)}"


def parse_base_id(model_id: str) -> tuple[str, str | None, str | None]:
    """(uri, mode, shots hash) of a ``base:`` identity; mode and hash are None for a zero-shot one (the
    hash also when only the mode is known, as in :func:`aicd.components.delivery.gate.model_id`)."""
    rest = model_id.removeprefix("base:")
    found = _BASE_MODE.match(rest)
    if found is None:
        return rest, None, None
    return found["uri"], found["mode"], found["hash"]


def same_model(expected: str | None, current: str | None) -> bool:
    """Whether ``current`` (an identity in Git) is the model ``expected`` names. A gate that knew only the
    mode of a few-shot base champion (``base:<uri>#<mode>``, from its report) names any shots of it."""
    if expected == current:
        return True
    if not expected or not current or not expected.startswith("base:"):
        return False
    _, mode, digest = parse_base_id(expected)
    return mode is not None and digest is None and current.startswith(expected + ":")


@dataclass(frozen=True)
class RolloutState:
    champion: str | None
    canary: str | None
    traffic: int | None


def load(text: str, where: str) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise DeliveryError(f"{where} is not valid YAML ({err})", "fix the file in the GitOps repository") from None
    if not isinstance(doc, dict) or doc.get("kind") != "InferenceService" or not isinstance(
            (doc.get("spec") or {}).get("predictor"), dict):
        raise DeliveryError(f"{where} is not an InferenceService with spec.predictor",
                            "copy manifests/overlays/<env>/inferenceservice.yaml from aicd into the GitOps repo")
    return doc


def dump(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=120)


def _serverless(doc: dict[str, Any]) -> bool:
    mode = (doc.get("metadata", {}).get("annotations") or {}).get(MODE, "Standard")
    return mode == "Serverless"


def ensure_mode(doc: dict[str, Any], mode: str, where: str) -> None:
    """Make the file's deployment mode explicit; refuse a file that contradicts the spec."""
    annotations = doc.setdefault("metadata", {}).setdefault("annotations", {})
    declared = annotations.setdefault(MODE, mode)
    if declared != mode:
        raise DeliveryError(f"{where} declares {MODE}: {declared}, but `delivery.serving.deployment_mode` is {mode}",
                            "make the spec and the overlay agree")


def _id(predictor: dict[str, Any] | None) -> str | None:
    return ((predictor or {}).get("annotations") or {}).get(MODEL_ID)


def state(doc: dict[str, Any]) -> RolloutState:
    spec = doc["spec"]
    if _serverless(doc):
        stable = (doc["metadata"].get("annotations") or {}).get(STABLE_PREDICTOR)
        if stable is None:
            return RolloutState(_id(spec["predictor"]), None, None)
        return RolloutState(_id(json.loads(stable)), _id(spec["predictor"]),
                            spec["predictor"].get("canaryTrafficPercent"))
    canary = spec.get("canary") or []
    if len(canary) > 1:
        raise DeliveryError(f"the InferenceService has {len(canary)} canaries; aicd manages exactly one",
                            "remove the extra spec.canary entries in the GitOps repository")
    if not canary:
        return RolloutState(_id(spec["predictor"]), None, None)
    return RolloutState(_id(spec["predictor"]), _id(canary[0]["predictor"]), canary[0].get("trafficPercent"))


def champion_ref(doc: dict[str, Any]) -> ModelRef | None:
    """What the champion predictor serves, read back from its identity and arguments; None when no
    aicd model is declared yet (the overlay as copied from aicd's manifests)."""
    spec = doc["spec"]
    predictor = spec["predictor"]
    stable = (doc["metadata"].get("annotations") or {}).get(STABLE_PREDICTOR) if _serverless(doc) else None
    if stable is not None:
        predictor = json.loads(stable)
    model_id = _id(predictor)
    if model_id is None:
        return None
    args = [str(a) for a in ((predictor.get("model") or {}).get("args") or [])]
    values = {flag: value for flag, value in zip(args, args[1:]) if flag.startswith("--")}
    if (predictor.get("model") or {}).get("runtime") == VLLM_RUNTIME:  # the vLLM runtime's spelling
        values = {"--base": values.get("--model_dir"), "--adapter": values.get("--lora-modules")}
        values = {flag: value for flag, value in values.items() if value}
    values.update(a.split("=", 1) for a in args if a.startswith(PROMPT_FLAGS) and "=" in a)
    if "--base" not in values:
        raise DeliveryError(f"the champion predictor ({model_id}) has no --base argument",
                            "restore its `model.args` from the commit that promoted it")
    adapter_name, adapter_uri = None, None
    fetched = {m.get("mountPath"): m.get("uri") for m in predictor.get("storageUris") or []}
    if "--adapter" in values:
        adapter_name, _, adapter_uri = values["--adapter"].partition("=")
        if not adapter_uri:
            raise DeliveryError(f"the champion's --adapter {values['--adapter']!r} is not NAME=URI",
                                "restore its `model.args` from the commit that promoted it")
        adapter_uri = fetched.get(adapter_uri, adapter_uri)
    values["--base"] = fetched.get(values["--base"], values["--base"])
    mode, shots = None, ()
    if model_id.startswith("base:"):
        _, mode, digest = parse_base_id(model_id)
        if mode is not None:
            shots = _champion_shots(model_id, values.get("--few-shot"), digest)
    return ModelRef(model_id, values["--base"], adapter_uri, adapter_name, values.get("--prompt-template"), mode,
                    shots)


def _champion_shots(model_id: str, value: str | None, digest: str | None) -> tuple[tuple[str, str], ...]:
    """The few-shot examples of a few-shot base champion, checked against the hash in its identity."""
    from aicd.components.errors import AicdError
    from aicd.components.serving.prompts import parse_few_shot

    fix = "restore its `model.args` (the --few-shot argument) from the commit that promoted it"
    if not value or not value.lstrip().startswith("["):
        raise DeliveryError(f"the champion {model_id} is served few-shot but has no --few-shot JSON argument", fix)
    try:
        shots = parse_few_shot(value)
    except AicdError as err:
        raise DeliveryError(f"the champion {model_id} has a bad --few-shot argument: {err.message}", fix) from None
    if not shots or shots_hash(shots) != digest:
        raise DeliveryError(f"the champion's --few-shot examples do not match its identity {model_id}", fix)
    return shots


def predictor_args(spec: Spec, ref: ModelRef) -> list[str]:
    """The predictor's command-line arguments (docs/contracts.md, Predictor) for one model: every
    `delivery.serving` flag, rendered by the one renderer (serving.config.predictor_args)."""
    from aicd.components.serving.config import predictor_args as render

    serving = spec.delivery.serving
    # Clients always ask for the service's name: the adapter answers to it when there is one.
    model_name = f"{serving.name}-base" if ref.adapter_uri else serving.name
    adapters = {ref.adapter_name: ref.adapter_uri} if ref.adapter_uri else None
    labels = list(spec.task.labels) if spec.task.type == "text-classification" else None
    prompt = _prompt_settings(spec, ref)
    return render(serving, ref.base_uri, adapters, spec.task.type, labels, model_name, prompt, base_digest(spec, ref))


def base_digest(spec: Spec, ref: ModelRef) -> str | None:
    """What the predictor must find at --base: a promoted full model's card digest (so a copy whose
    card.json was deleted or edited is refused), or the digest the spec pins on a base candidate."""
    if ref.model_id.startswith("sha256:") and not ref.adapter_uri:
        return ref.model_id
    base = parse_base_id(ref.model_id)[0] if ref.model_id.startswith("base:") else ref.base_uri
    return next((c.digest for c in spec.candidates if c.uri == base and c.digest), None)


def _prompt_settings(spec: Spec, ref: ModelRef) -> PromptSettings | None:
    if spec.task.type != "causal-lm":
        return None
    return PromptSettings(spec.task.system_prompt or None, ref.prompt_template or None, ref.shots)


def prompt_args(spec: Spec, ref: ModelRef) -> list[str]:
    """The prompt the model was evaluated with, as predictor flags (``--flag=value``: a value may start
    with '-'): the task's system prompt, the template, the few-shot examples. None for a classifier."""
    settings = _prompt_settings(spec, ref)
    return prompt_flags(settings) if settings else []


def evaluated_template(spec: Spec, candidate: str | None = None) -> str | None:
    """The prompt template evaluation used for ``candidate`` (the first one for a trained artifact):
    the candidate's, else the task's."""
    return spec.candidate(candidate).prompt_template or spec.task.prompt_template


def storage(ref: ModelRef, vllm: bool = False) -> tuple[list[dict[str, str]], ModelRef]:
    """``storageUris`` for the storage initializer, and ``ref`` with the in-pod paths it fetches them to.

    The adapter (the promoted artifact) is always fetched so; for aicd's predictor the base only when
    served alone (an adapter's card names its base by URI, and the predictor checks that ``--base`` is
    that URI); for the vLLM runtime always."""
    uris, base, adapter = [], ref.base_uri, ref.adapter_uri
    if base.startswith(STORAGE_SCHEMES) and (not adapter or vllm):
        base = f"{MODEL_ROOT}/base"
        uris.append({"uri": ref.base_uri, "mountPath": base})
    if adapter and adapter.startswith(STORAGE_SCHEMES):
        adapter = f"{MODEL_ROOT}/adapters/{ref.adapter_name}"
        uris.append({"uri": ref.adapter_uri, "mountPath": adapter})
    return uris, dataclasses.replace(ref, base_uri=base, adapter_uri=adapter)


def canary_name(ref: ModelRef) -> str:
    """The name of a canary entry's predictor (required by the KServe 0.21 API): stable per model."""
    return f"canary-{hashlib.sha256(ref.model_id.encode()).hexdigest()[:10]}"


def build_predictor(template: dict[str, Any], spec: Spec, ref: ModelRef, role: str) -> dict[str, Any]:
    """A predictor for ``ref``: the champion's predictor with the model identity, arguments, storage and
    role replaced."""
    predictor = copy.deepcopy(template)
    predictor.pop("canaryTrafficPercent", None)
    predictor["annotations"] = {**(predictor.get("annotations") or {}), MODEL_ID: ref.model_id}
    predictor["labels"] = {**(predictor.get("labels") or {}), ROLE: role, SERVICE: spec.delivery.serving.name}
    model = predictor.setdefault("model", {})
    model.setdefault("name", "kserve-container")  # required in spec.canary[].predictor.model
    predictor.pop("name", None)
    if model.get("runtime") == VLLM_RUNTIME:
        _vllm_predictor(predictor, model, spec, ref)
        return predictor
    uris, in_pod = storage(ref)
    if uris:
        predictor["storageUris"] = uris
    else:
        predictor.pop("storageUris", None)
    model.pop("storageUri", None)
    model["args"] = predictor_args(spec, in_pod)
    _mount_secrets(predictor, model, spec)
    return predictor


SECRET_VOLUME = "aicd-secret-"


def _mount_secrets(predictor: dict[str, Any], model: dict[str, Any], spec: Spec) -> None:
    """Mount each Secret ``delivery.serving`` names (admin token, feedback signing key and token) read-only
    where the predictor's flags read it; the template's earlier mounts of ours are replaced, others kept."""
    from aicd.components.serving.config import secret_mounts

    volumes = [v for v in predictor.get("volumes") or [] if not v.get("name", "").startswith(SECRET_VOLUME)]
    mounts = [m for m in model.get("volumeMounts") or [] if not m.get("name", "").startswith(SECRET_VOLUME)]
    for name, folder in sorted(set(secret_mounts(spec.delivery.serving).values())):
        volume = f"{SECRET_VOLUME}{name.replace('.', '-')}"[:63].rstrip("-")  # a volume name is a DNS label
        volumes.append({"name": volume, "secret": {"secretName": name}})
        mounts.append({"name": volume, "mountPath": folder, "readOnly": True})
    for owner, key, items in ((predictor, "volumes", volumes), (model, "volumeMounts", mounts)):
        if items:
            owner[key] = items
        else:
            owner.pop(key, None)


def _vllm_predictor(predictor: dict[str, Any], model: dict[str, Any], spec: Spec, ref: ModelRef) -> None:
    """Arguments of KServe's Hugging Face server with the vLLM backend: the base folder, and the adapter
    as a LoRA module under the service's name (as aicd's predictor serves it)."""
    if spec.task.type != "causal-lm":
        raise DeliveryError(f"the {VLLM_RUNTIME} runtime serves causal-lm models, the spec's task is "
                            f"{spec.task.type}", "use the aicd-predictor runtime in this overlay")
    uris, in_pod = storage(ref, vllm=True)
    if not in_pod.base_uri.startswith(MODEL_ROOT):
        raise DeliveryError(f"the {VLLM_RUNTIME} runtime cannot load base model {ref.base_uri}: it reads Hugging "
                            "Face folders the storage initializer fetches",
                            "give the candidate an hf://, s3://, gs:// or pvc:// URI of the safetensors folder")
    name = spec.delivery.serving.name
    args = ["--model_name", f"{name}-base" if in_pod.adapter_uri else name, "--model_dir", in_pod.base_uri,
            "--backend", "vllm"]
    if in_pod.adapter_uri:
        args += ["--enable-lora", "--lora-modules", f"{name}={in_pod.adapter_uri}"]
    predictor["storageUris"] = uris
    model["args"] = args


def _with_role(predictor: dict[str, Any], role: str) -> dict[str, Any]:
    out = copy.deepcopy(predictor)
    out.pop("canaryTrafficPercent", None)
    out["labels"] = {**(out.get("labels") or {}), ROLE: role}
    return out


def set_champion(doc: dict[str, Any], spec: Spec, ref: ModelRef) -> None:
    """Serve ``ref`` as the champion directly (the first champion: nothing to compare a canary with)."""
    doc["spec"]["predictor"] = build_predictor(doc["spec"]["predictor"], spec, ref, "stable")
    if _serverless(doc):
        (doc["metadata"].get("annotations") or {}).pop(STABLE_PREDICTOR, None)
        doc["spec"].pop("canary", None)
    else:
        doc["spec"]["canary"] = []


def start_canary(doc: dict[str, Any], spec: Spec, ref: ModelRef, traffic: int) -> None:
    """Declare ``ref`` as the canary at ``traffic`` percent, replacing any canary in flight."""
    if _serverless(doc):
        annotations = doc["metadata"].setdefault("annotations", {})
        stable = json.loads(annotations[STABLE_PREDICTOR]) if STABLE_PREDICTOR in annotations else doc["spec"][
            "predictor"]
        annotations[STABLE_PREDICTOR] = json.dumps(_with_role(stable, "stable"), sort_keys=True)
        predictor = build_predictor(stable, spec, ref, "canary")
        predictor["canaryTrafficPercent"] = traffic
        doc["spec"]["predictor"] = predictor
        doc["spec"].pop("canary", None)  # Knative mode has no canary list
        return
    predictor = build_predictor(doc["spec"]["predictor"], spec, ref, "canary")
    predictor["name"] = canary_name(ref)
    doc["spec"]["canary"] = [{"trafficPercent": traffic, "predictor": predictor}]


def set_traffic(doc: dict[str, Any], traffic: int) -> None:
    if _serverless(doc):
        doc["spec"]["predictor"]["canaryTrafficPercent"] = traffic
    else:
        doc["spec"]["canary"][0]["trafficPercent"] = traffic


def promote_canary(doc: dict[str, Any]) -> None:
    """The canary becomes the champion; no canary remains."""
    if _serverless(doc):
        doc["spec"]["predictor"] = _with_role(doc["spec"]["predictor"], "stable")
        doc["metadata"]["annotations"].pop(STABLE_PREDICTOR, None)
        return
    # As the KServe API documents it: the canary's predictor becomes spec.predictor (which has no name).
    doc["spec"]["predictor"] = _with_role(doc["spec"]["canary"][0]["predictor"], "stable")
    doc["spec"]["predictor"].pop("name", None)
    doc["spec"]["canary"] = []


def rollback_canary(doc: dict[str, Any]) -> None:
    """Remove the canary; the champion keeps all traffic."""
    if _serverless(doc):
        stable = doc["metadata"]["annotations"].pop(STABLE_PREDICTOR)
        doc["spec"]["predictor"] = json.loads(stable)
        return
    doc["spec"]["canary"] = []
