"""Platform profiles: where and how each step role runs in a cluster.

A profile is a small YAML file (examples/profiles/) that a platform team writes once
per cluster: GPUs per step role, node selectors and tolerations, PVCs for
checkpoints and the model cache, Secret names, caching and retries. It is applied
when pipelines compile (pipelines/platform.py); the spec stays free of it.
"""

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from aicd.components.errors import SpecError
from aicd.components.spec import _problems

# Every task of a pipeline has one of these roles (pipelines/platform.py STEP_ROLES).
ROLES = ("data", "labeling", "evaluate", "train", "deliver")
GPU_ROLES = ("train",)
PVC_ROOT = "/mnt/pvc"
SECRETS_ROOT = "/var/run/secrets/aicd"
_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
# Names shared with manifests/base (README "Names"): the pipeline's service account, and the
# label every pipeline pod carries so that the `delivery-egress` NetworkPolicy selects it.
PIPELINE_SERVICE_ACCOUNT = "aicd-pipeline"
POD_LABELS = {"aicd.dev/component": "pipeline", "app.kubernetes.io/part-of": "aicd"}

Role = Literal["data", "labeling", "evaluate", "train", "deliver"]
K8sName = Annotated[str, Field(pattern=_NAME, max_length=253)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Toleration(_Section):
    key: str
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class RoleSpec(_Section):
    """How the tasks of one role run: resources and placement."""

    cpu: str | None = None
    memory: str | None = None
    gpus: Annotated[int, Field(ge=0)] = 0
    # The extended resource the GPUs are requested as.
    accelerator: str = "nvidia.com/gpu"
    # The GPU model, placed with a node selector on `gpu_type_label`.
    gpu_type: str | None = None
    gpu_type_label: str = "cloud.google.com/gke-accelerator"
    node_selector: dict[str, str] = {}
    tolerations: list[Toleration] = []
    # roles.train only: `trainjob` trains each method as a Kubeflow Trainer TrainJob (nodes, processes and
    # GPUs per node from the spec's training.resources) instead of in the step's pod.
    engine: Literal["pod", "trainjob"] = "pod"
    trainjob_claim: K8sName | None = None       # data and checkpoints (default: the `checkpoints` volume)
    trainjob_runtime: str = "torch-distributed"
    trainjob_deadline_seconds: Annotated[int, Field(gt=0)] = 7 * 24 * 3600


class Roles(_Section):
    """Settings per step role; a role left out runs with the cluster's defaults and no GPU."""

    data: RoleSpec = RoleSpec()
    labeling: RoleSpec = RoleSpec()
    evaluate: RoleSpec = RoleSpec()
    train: RoleSpec = RoleSpec()
    deliver: RoleSpec = RoleSpec()


class Volume(_Section):
    """A PersistentVolumeClaim mounted at /mnt/pvc/<claim> on the tasks of some roles."""

    claim: K8sName
    roles: list[Role] = list(ROLES)
    # What the claim holds: `model-cache` also sets AICD_CACHE, `checkpoints` AICD_CHECKPOINT_ROOT.
    purpose: Literal["model-cache", "checkpoints", "data"] = "data"


class SecretMount(_Section):
    """A Kubernetes Secret mounted at /var/run/secrets/aicd/<name> (components/secrets.py reads it)."""

    name: K8sName
    roles: list[Role] = list(ROLES)


class RetryPolicy(_Section):
    count: Annotated[int, Field(ge=0, le=10)] = 0
    backoff_seconds: Annotated[int, Field(ge=0)] = 30
    backoff_factor: Annotated[float, Field(ge=1.0)] = 2.0
    backoff_max_seconds: Annotated[int, Field(ge=0)] = 3600


class Profile(_Section):
    name: Annotated[str, Field(pattern=_NAME)]
    description: str = ""
    roles: Roles = Roles()
    volumes: list[Volume] = []
    secrets: list[SecretMount] = []
    # Cache steps whose inputs did not change (ingest, gate and promote never are).
    caching: bool = True
    retries: RetryPolicy = RetryPolicy()
    image_pull_secrets: list[K8sName] = []
    # The Kubernetes service account every task runs as (`aicd submit` sets it on the run);
    # manifests/base creates it with exactly the permissions the steps need.
    service_account: K8sName = PIPELINE_SERVICE_ACCOUNT

    @model_validator(mode="after")
    def _check(self) -> "Profile":
        problems = []
        for role in ROLES:
            spec = self.role(role)
            if spec.gpus and role not in GPU_ROLES:
                problems.append(f"`roles.{role}.gpus` is {spec.gpus}, but only training steps get GPUs; "
                                f"remove it (roles with GPUs: {', '.join(GPU_ROLES)})")
        train = self.roles.train
        for role in ROLES:
            if role != "train" and self.role(role).engine != "pod":
                problems.append(f"`roles.{role}.engine` is {self.role(role).engine}; only roles.train has an engine")
        if train.engine == "trainjob" and not (train.trainjob_claim or self.volume("checkpoints")):
            problems.append("`roles.train.engine` is trainjob but no claim holds its data and checkpoints; set "
                            "`roles.train.trainjob_claim` or add a volume with purpose checkpoints")
        for kind, items in (("volumes", [v.claim for v in self.volumes]), ("secrets", [s.name for s in self.secrets])):
            dupes = sorted({n for n in items if items.count(n) > 1})
            if dupes:
                problems.append(f"`{kind}` lists {', '.join(dupes)} more than once; list each once")
        for purpose in ("model-cache", "checkpoints"):
            claims = [v.claim for v in self.volumes if v.purpose == purpose]
            if len(claims) > 1:
                problems.append(f"`volumes` has {len(claims)} claims with purpose {purpose} "
                                f"({', '.join(claims)}); keep one")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def role(self, role: str) -> RoleSpec:
        if role not in ROLES:
            raise ValueError(f"unknown step role {role!r}; use one of {', '.join(ROLES)}")
        return getattr(self.roles, role)

    def volume(self, purpose: str) -> Volume | None:
        return next((v for v in self.volumes if v.purpose == purpose), None)


LOCAL = Profile(name="local", description="This machine: no GPUs, volumes or secrets; caching on.")


def parse_profile(data: object, source: str = "profile") -> Profile:
    """Validate a profile given as a mapping; SpecError lists every problem."""
    if not isinstance(data, dict):
        raise SpecError([f"a platform profile must be a YAML mapping, got {type(data).__name__}"], source)
    try:
        return Profile.model_validate(data)
    except ValidationError as err:
        raise SpecError(_problems(err), source) from None


def load_profile(path: str | Path | None) -> Profile:
    """Read a profile YAML file; None gives the built-in local profile."""
    if path is None:
        return LOCAL
    path = Path(path)
    if not path.is_file():
        raise SpecError([f"{path} does not exist; pass a profile such as examples/profiles/gpu-cluster.yaml"],
                        str(path))
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise SpecError([f"not valid YAML: {err}"], str(path)) from None
    return parse_profile(data, str(path))
