"""The content-hash cache of local runs (kfp.local has none that survives a run).

A task's key is the sha256 of what decides its outputs: the component (its spec,
image, command and embedded source), the source of the ``aicd.components`` package
the step imports, its parameters, and the content digest of every input artifact
(not its path, which changes every run). A hit copies the stored outputs into this
run's task folder, so downstream tasks see the same bytes and hit too.
"""

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from kfp import dsl
from kfp.dsl.types import artifact_types

from aicd.components.cards import atomic_dir, atomic_write_text, sha256_file

log = logging.getLogger(__name__)
CACHE_VERSION = 2
_ENTRY = "outputs.json"


_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> sha256, per process


def path_digest(path: str | Path, pattern: str = "*") -> str:
    """sha256 over the relative names and bytes of a file or a directory tree."""
    path = Path(path)
    if not path.exists():
        return "absent"
    files = [path] if path.is_file() else sorted(p for p in path.rglob(pattern) if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        stat = file.stat()
        memo_key = (str(file), stat.st_size, stat.st_mtime_ns)
        if memo_key not in _FILE_DIGESTS:
            _FILE_DIGESTS[memo_key] = sha256_file(file)
        name = "." if file == path else file.relative_to(path).as_posix()
        digest.update(f"{name} {_FILE_DIGESTS[memo_key]}\n".encode())
    return digest.hexdigest()


def run_outputs(run) -> dict[str, Any]:
    """Every output of a local run (``task.output``): artifacts by content digest and metadata,
    parameters by value; two runs with equal outputs give equal dicts."""
    out = {}
    for task in run.tasks:
        for name, value in task.outputs.items():
            out[f"{task.name}.{name}"] = ((path_digest(value.path), value.metadata) if hasattr(value, "path")
                                          else value)
    return out


def source_digest() -> str:
    """Digest of the aicd.components sources: the logic a step imports inside its body."""
    import aicd.components

    return path_digest(Path(aicd.components.__file__).parent, "*.py")


def _value_for_key(value: Any) -> Any:
    if isinstance(value, dsl.Artifact):
        # Content only: aicd steps read an input artifact's files, never its metadata (a summary of
        # the files for the UI), so one model copied to another artifact is the same input.
        return {"artifact": type(value).schema_title, "content": path_digest(value.path)}
    if isinstance(value, list):
        return [_value_for_key(v) for v in value]
    if isinstance(value, dict):
        return {k: _value_for_key(v) for k, v in value.items()}
    return value


class ContentCache:
    """Outputs of finished tasks under ``root/<key[:2]>/<key>/``."""

    def __init__(self, root: str | Path, code_digest: str | None = None):
        self.root = Path(root)
        self.code_digest = code_digest if code_digest is not None else source_digest()

    def key(self, component_spec, executor_spec, arguments: dict[str, Any]) -> str:
        container = executor_spec.container
        material = {
            "version": CACHE_VERSION,
            # The executor label is a name ("exec-evaluate-model-3"), not content: two tasks of one
            # component with the same arguments share their outputs wherever they sit in the graph.
            "component": {k: v for k, v in json_format.MessageToDict(
                component_spec, preserving_proto_field_name=True).items() if k != "executor_label"},
            "image": container.image,
            "command": list(container.command) + list(container.args),
            "env": {e.name: e.value for e in container.env},
            "code": self.code_digest,
            "arguments": _value_for_key(arguments),
        }
        blob = json.dumps(material, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()

    def _entry(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str, task_root: str | Path) -> dict[str, Any] | None:
        """The stored outputs, with artifacts copied under ``task_root``; None on a miss."""
        entry = self._entry(key)
        try:
            stored = json.loads((entry / _ENTRY).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        task_root = Path(task_root)
        outputs: dict[str, Any] = {}
        for name, item in stored["outputs"].items():
            if "parameter" in item:
                outputs[name] = item["parameter"]
                continue
            source, target = entry / "artifacts" / name, task_root / name
            if not source.exists() and item["exists"]:
                return None
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            if source.is_dir():
                shutil.copytree(source, target)
            elif source.is_file():
                shutil.copy2(source, target)
            cls = artifact_types._SCHEMA_TITLE_TO_TYPE.get(item["schema_title"], dsl.Artifact)
            outputs[name] = cls(name=name, uri=str(target), metadata=item["metadata"])
        return outputs

    def put(self, key: str, outputs: dict[str, Any]) -> bool:
        """Store a task's outputs; False (nothing stored) when an output cannot be cached."""
        table: dict[str, Any] = {}
        for name, value in outputs.items():
            if isinstance(value, dsl.Artifact):
                table[name] = {"schema_title": type(value).schema_title, "metadata": value.metadata,
                               "exists": Path(value.path).exists()}
            elif isinstance(value, (str, int, float, bool, dict, list)) or value is None:
                table[name] = {"parameter": value}
            else:
                log.debug("not caching: output %s is a %s", name, type(value).__name__)
                return False
        with atomic_dir(self._entry(key)) as tmp:
            for name, value in outputs.items():
                if isinstance(value, dsl.Artifact) and Path(value.path).exists():
                    src = Path(value.path)
                    dst = tmp / "artifacts" / name
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copytree(src, dst) if src.is_dir() else shutil.copy2(src, dst)
            atomic_write_text(tmp / _ENTRY, json.dumps({"key": key, "outputs": table}, indent=2, default=str))
        return True
