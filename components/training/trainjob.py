"""Train one method through Kubeflow Trainer from a pipeline step (profile ``roles.train.engine: trainjob``).

The step's pod stages the data set on a claim, creates a TrainJob whose every process runs the
same entry point as the in-pod path (``python -m aicd.components.training train-adapter``,
under torchrun: ``training.resources.num_nodes`` x ``procs_per_node``, GPUs per node), waits for
it, and copies the trained adapter back as the step's Model artifact. Checkpoints live on the
claim; the job's name is a digest of its inputs, so a retried step follows the same job (and a
job killed midway resumes from its checkpoints). ``activeDeadlineSeconds`` bounds the job.
"""

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aicd.components.cards import verify_card
from aicd.components.errors import TrainingError
from aicd.components.spec import Spec
from aicd.components.training.launcher import (
    PVC_MOUNT,
    launch_trainjob,
    train_adapter_args,
    train_from_scratch_args,
    trainjob_manifest,
    trainjob_name,
)

log = logging.getLogger(__name__)
WORK = "aicd-trainjobs"


def _claim_root(claim: str) -> Path:
    """Where the claim is mounted in this pod (the profile mounts it at /mnt/pvc/<claim>)."""
    return Path(os.environ.get("AICD_PVC_ROOT", PVC_MOUNT)) / claim


def _stage(dataset_dir: Path, target: Path) -> None:
    if (target / "card.json").is_file():
        verify_card(target)
        return
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(dataset_dir, tmp)
    tmp.rename(target)


def start_digest(start_dir: str | Path | None) -> str | None:
    """The card digest of the Model artifact a dpo method starts from; None for none or a base reference."""
    from aicd.components.contracts import read_model_ref

    ref = read_model_ref(start_dir) if start_dir is not None else None
    return None if ref is None or ref.is_base else ref.digest


def plan(spec: Spec, dataset_dir: str | Path, method: str | None, claim: str, start_dir: str | Path | None = None,
         **manifest_options: Any):
    """(TrainJob manifest, the job's folder in this pod): named after the spec, method, data set and start.

    ``method`` None trains stage 4's model from scratch; ``start_dir``: the Model artifact a dpo method
    starts from (staged beside the data set)."""
    card = json.loads((Path(dataset_dir) / "card.json").read_text(encoding="utf-8"))
    start = start_digest(start_dir) if method else None
    key = hashlib.sha256(json.dumps([spec.model_dump(mode="json"), method, card.get("fingerprint"),
                                     *([start] if start else [])], sort_keys=True).encode()).hexdigest()
    name = trainjob_name(spec, method or "scratch", [key])
    uri = f"pvc://{claim}/{WORK}/{name}"
    args = train_adapter_args(spec, method, f"{uri}/dataset", f"{uri}/model", f"{uri}/start" if start else None) \
        if method else train_from_scratch_args(spec, f"{uri}/dataset", f"{uri}/model")
    args += ["--checkpoint-root", f"{uri}/checkpoints", "--summary", f"{uri}/summary.json"]
    manifest = trainjob_manifest(spec, name, args, claim=claim, **manifest_options)
    return manifest, _claim_root(claim) / WORK / name


def train_on_trainjob(spec: Spec, api, dataset_dir: str | Path, method: str | None, out_dir: str | Path, *,
                      claim: str,
                      namespace: str | None = None, runtime: str = "torch-distributed",
                      deadline_seconds: int = 7 * 24 * 3600, poll_seconds: float = 15.0,
                      sleep: Callable[[float], None] = time.sleep,
                      start_dir: str | Path | None = None) -> dict[str, Any]:
    """Run one method (None: from scratch) as a TrainJob, copy its artifact to ``out_dir``; the entry point's
    summary. ``start_dir``: the Model artifact a dpo method starts from (choose_start's)."""
    manifest, work = plan(spec, dataset_dir, method, claim, start_dir, namespace=namespace, runtime=runtime,
                          deadline_seconds=deadline_seconds)
    if not _claim_root(claim).is_dir():
        raise TrainingError(f"the claim {claim!r} is not mounted at {_claim_root(claim)}",
                            "list it under `volumes` of the platform profile with role train")
    work.mkdir(parents=True, exist_ok=True)
    _stage(Path(dataset_dir), work / "dataset")
    if "--start" in manifest["spec"]["trainer"]["args"]:
        _stage(Path(start_dir), work / "start")
    log.info("training %s as TrainJob %s (%d node(s) x %d process(es))", method or "from scratch",
             manifest["metadata"]["name"], spec.training.resources.num_nodes, spec.training.resources.procs_per_node)
    launch_trainjob(api, manifest, poll_seconds=poll_seconds, timeout_seconds=deadline_seconds + 600, sleep=sleep)
    verify_card(work / "model")
    shutil.copytree(work / "model", out_dir, dirs_exist_ok=True)
    summary = work / "summary.json"
    return json.loads(summary.read_text(encoding="utf-8")) if summary.is_file() else {}


def run_step(spec: Spec, dataset_dir: str, model_dir: str, method: str | None, claim: str,
             namespace: str, runtime: str, deadline_seconds: int, start_dir: str | None = None):
    """The TrainJob steps' logic: (the step's JSON summary, its scalar figures, the Model metadata)."""
    from kubernetes import client, config

    from aicd.components.training.runtime import artifact_size_mb

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    summary = train_on_trainjob(spec, client.CustomObjectsApi(), dataset_dir, method, model_dir, claim=claim,
                                namespace=namespace or None, runtime=runtime, deadline_seconds=deadline_seconds,
                                start_dir=start_dir)
    card = verify_card(model_dir)
    figures = {k: float(v) for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    figures["adapter_size_mb"] = artifact_size_mb(model_dir)
    name = method or "from-scratch"
    metadata = {"digest": card["digest"], "kind": card["kind"], "method": card.get("method") or name,
                "method_name": name, "base_model": card.get("base_model") or ""}
    result = {"method": name, "method_kind": card.get("method") or name, "digest": card["digest"], "metrics": figures}
    return json.dumps(result), figures, metadata
