"""Compile pipelines to KFP IR YAML and send them to a Kubeflow Pipelines endpoint.

``compile_pipeline`` writes one YAML file atomically; ``submit_pipeline`` sends a
run (or, for ``continuous``, a recurring run on a cron schedule) through
``kfp.Client``. The client is created by :func:`make_client` so tests can stand a
fake in for the KFP API server, which cannot run on this machine.
"""

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aicd.components.errors import AicdError

log = logging.getLogger(__name__)
DEFAULT_SCHEDULE = "0 0 */6 * * *"  # KFP cron has seconds: every 6 hours


class SubmitError(AicdError):
    """The KFP endpoint refused or could not be reached."""


def set_image_environment(registry: str | None, tag: str | None) -> None:
    """Point the role images at a registry/tag; must run before any steps module is imported."""
    import sys

    if registry:
        os.environ["AICD_IMAGE_REGISTRY"] = registry
    if tag:
        os.environ["AICD_IMAGE_TAG"] = tag
    # The references are fixed when aicd.components._images is imported (steps read its constants when
    # their components are defined), so that module, not the steps, is what must not be loaded yet.
    images = sys.modules.get("aicd.components._images")
    if images is None or not (registry or tag):
        return
    fixed = {role: getattr(images, f"{role.upper()}_IMAGE") for role in images.ROLES}
    stale = {role: ref for role, ref in fixed.items() if ref != images.image(role)}
    if stale:
        raise AicdError(f"the role images were fixed before the image registry/tag was set: "
                        f"{', '.join(f'{r} -> {ref}' for r, ref in sorted(stale.items()))}",
                        "set --registry/--tag in a fresh process before any aicd steps or images are imported "
                        "(the `aicd compile` command does)")


def compile_pipeline(pipeline, path: str | Path) -> Path:
    """Write a pipeline's KFP IR YAML to ``path`` (written beside it, then renamed)."""
    from kfp import compiler

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp.yaml", dir=path.parent)
    os.close(fd)
    try:
        compiler.Compiler().compile(pipeline_func=pipeline, package_path=tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def make_client(host: str, namespace: str | None = None, token: str | None = None):
    """A kfp.Client for ``host``; an existing bearer token may come from a Secret or env."""
    from kfp.client import Client

    kwargs: dict[str, Any] = {"host": host, "existing_token": token}
    if namespace:
        kwargs["namespace"] = namespace
    return Client(**kwargs)


@dataclass
class Submitted:
    kind: str  # "run" | "recurring-run"
    id: str
    name: str
    url: str | None = None


def submit_pipeline(client, package: str | Path, name: str, arguments: dict[str, Any], *, experiment: str,
                    recurring: bool = False, schedule: str = DEFAULT_SCHEDULE,
                    namespace: str | None = None, service_account: str | None = None) -> Submitted:
    """Create a run of a compiled package, or a recurring run for continuous delivery; ``arguments`` are
    the pipeline's parameters (the spec's name and sections, :func:`aicd.pipelines.stages.pipeline_arguments`)."""
    try:
        if not recurring:
            result = client.create_run_from_pipeline_package(
                str(package), arguments=arguments, run_name=name, experiment_name=experiment,
                namespace=namespace, service_account=service_account)
            run_id = getattr(result, "run_id", None) or str(result)
            return Submitted("run", run_id, name)
        try:
            exp = client.get_experiment(experiment_name=experiment, namespace=namespace)
        except Exception:  # noqa: BLE001 - kfp raises ValueError or ApiException for a missing experiment
            exp = client.create_experiment(name=experiment, namespace=namespace)
        job = client.create_recurring_run(
            experiment_id=exp.experiment_id, job_name=name, cron_expression=schedule, max_concurrency=1,
            no_catchup=True, params=arguments, pipeline_package_path=str(package),
            service_account=service_account)
        return Submitted("recurring-run", getattr(job, "recurring_run_id", None) or str(job), name)
    except AicdError:
        raise
    except Exception as err:  # noqa: BLE001 - the API client raises many types; name the endpoint
        raise SubmitError(f"the KFP endpoint refused {name}: {type(err).__name__}: {err}",
                          "check --host, your credentials and that the namespace exists") from err
