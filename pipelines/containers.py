"""Steps in their role images through a Docker-compatible API (docker, or podman's socket).

``kfp.local.DockerRunner`` runs each step's compiled command in the step's image. This
module adds what a pod has and kfp.local does not:

- the container runs as a pod would: no network, read-only root, a writable ``/tmp``,
  uid 10001 (the images' user);
- host folders the spec names (local model paths, the GitOps repository) are mounted at
  the same path, as a PVC would be;
- the step's exit code is read before its container is removed: podman 4.3.1 removes an
  auto-removed container before ``wait()`` can read its code (podman issues 18889, 18912),
  and kfp 2.17 then takes a failed step as succeeded.
"""

import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from aicd.components.errors import ImageError

log = logging.getLogger(__name__)
POD_UID = 10001
POD_LIKE: dict[str, Any] = {
    "network_mode": "none",
    "read_only": True,
    "tmpfs": {"/tmp": "rw,exec,size=4g"},
    "user": f"{POD_UID}:{POD_UID}",
}


def spec_paths(value: Any) -> list[Path]:
    """Absolute paths of existing files or folders named anywhere in a spec (mounted into the steps)."""
    found: set[Path] = set()

    def walk(item: Any) -> None:
        if isinstance(item, dict):
            for v in item.values():
                walk(v)
        elif isinstance(item, list):
            for v in item:
                walk(v)
        elif isinstance(item, str) and item.startswith("/") and "\n" not in item and os.path.exists(item):
            path = Path(item).resolve()
            if len(path.parts) > 2:  # never a top-level folder such as /tmp or /home
                found.add(path)

    walk(value)
    return sorted(p for p in found if not any(q != p and q in p.parents for q in found))


def docker_runner(mounts: Iterable[Path] = (), **run_args: Any):
    """A ``kfp.local.DockerRunner`` whose containers run pod-like, with ``mounts`` bound read-write."""
    from kfp import local

    runner = local.DockerRunner(**{**POD_LIKE, **run_args})
    runner.aicd_mounts = [str(Path(m).resolve()) for m in mounts]
    return runner


def run_container(client, image: str, command: list[str], volumes: dict[str, Any], *,
                  mounts: Iterable[str] = (), log_file: str | None = None, **run_args: Any) -> int:
    """Run ``command`` in ``image`` and return its exit code, read before the container is removed."""
    import docker

    try:
        client.images.get(image)
    except docker.errors.ImageNotFound as err:
        raise ImageError(f"image {image} is not built here (steps never pull at run time)",
                             "build the role images first: make images") from err
    volumes = {**volumes, **{m: {"bind": m, "mode": "rw"} for m in mounts if m not in volumes}}
    run_args.pop("auto_remove", None)
    container = client.containers.run(image=image, command=command, detach=True, stdout=True, stderr=True,
                                      volumes=volumes, **run_args)
    try:
        if log_file:
            Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        sink = open(log_file, "ab") if log_file else None
        try:
            for chunk in container.logs(stream=True, follow=True):
                if sink:
                    sink.write(chunk)
                else:
                    log.info("%s", chunk.decode(errors="replace").rstrip("\n"))
        finally:
            if sink:
                sink.close()
        return int(container.wait()["StatusCode"])
    finally:
        container.remove(force=True)


@contextlib.contextmanager
def kept_exit_codes(runner, log_file: Callable[[], str | None]) -> Iterator[None]:
    """Route kfp.local's Docker task handler through :func:`run_container` while the block runs."""
    from kfp.local import docker_task_handler

    original = docker_task_handler.run_docker_container

    def run(client, image, command, volumes, **run_args):
        return run_container(client, image, command, volumes, mounts=getattr(runner, "aicd_mounts", ()),
                             log_file=log_file(), **run_args)

    docker_task_handler.run_docker_container = run
    try:
        yield
    finally:
        docker_task_handler.run_docker_container = original


def prepare_root(root: Path) -> None:
    """Make a pipeline root writable by the images' user, as a pod's volume is."""
    root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        for path in [root, *root.rglob("*")]:
            os.chown(path, POD_UID, POD_UID)
    else:
        root.chmod(0o777)
