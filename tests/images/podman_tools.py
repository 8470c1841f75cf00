"""Helpers of the image tests: the role images' names, podman run as a pod would, volume ownership."""

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "podman" / "images.sh"
CONF = ROOT / "tools" / "podman" / "containers.conf"
ROLES = ("base", "train", "serve")
# How a pod runs a step: no network, read-only root, a writable /tmp, the images' user.
POD = ["--network", "none", "--read-only", "--tmpfs", "/tmp:rw,exec,size=4g", "--user", "10001:10001"]


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} is not installed (apt-get install -y podman runc mmdebstrap)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def build_images() -> dict[str, str]:
    """Build every role image (cached) under the default registry and tag; role -> image name."""
    require("podman")
    env = {k: v for k, v in engine_env().items() if k not in ("REGISTRY", "TAG", "ROLES")}
    subprocess.run([str(SCRIPT), "build"], env=env, check=True, timeout=3600)
    names = subprocess.run([str(SCRIPT), "names"], env=env, check=True, capture_output=True, text=True).stdout.split()
    return dict(zip(ROLES, names))


def engine_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONF)}


def podman_run(image: str, command: list[str], *, mounts: dict[str, str] | None = None, pod: bool = True,
               timeout: float = 900, extra: list[str] | None = None) -> subprocess.CompletedProcess:
    """``podman run`` as a pod would (POD flags), ``mounts`` as host -> ``path[:ro]`` at the same path.

    The container is kept until podman returns its exit code, then removed (an auto-removed
    container can lose its exit code on podman 4.3.1).
    """
    name = f"aicd-test-{uuid.uuid4().hex[:12]}"
    args = ["podman", "run", "--name", name, *(POD if pod else [])]
    for host, target in (mounts or {}).items():
        args += ["-v", f"{host}:{target}"]
    try:
        return subprocess.run([*args, *(extra or []), image, *command], env=engine_env(), capture_output=True,
                              text=True, timeout=timeout)
    finally:
        subprocess.run(["podman", "rm", "-f", "--ignore", name], env=engine_env(), capture_output=True)


def chown_tree(path: Path, uid: int = 10001) -> None:
    """Make a host folder writable by the images' user, as a pod's volume is."""
    for p in [path, *path.rglob("*")]:
        os.chown(p, uid, uid)
