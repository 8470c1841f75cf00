"""Where a base model's trust comes from, checked before any weights load (issue 17).

A model folder is loaded only when one of these vouches for every file in it:
- a pin (``candidates[].digest``, ``--base-digest``): its card's digest or its content digest;
- its own ``card.json`` (an aicd artifact, a download or a GGUF conversion cache), verified;
- for ``pkg://`` models, the installed distribution's RECORD (pip's sha256 of every file).

Anything else (a local, ``file://`` or ``pvc://`` folder with neither card nor pin) is refused with
the fix: pin its content digest, which ``aicd digest PATH`` prints.

A verification is remembered for the life of the process, keyed by the folder and what vouched for
it, and reused only while no file under it changed (size, mtime, ctime and inode of every file), so
a base loaded several times by one step is hashed once.
"""

import base64
import importlib.metadata
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aicd.components.cards import CARD, content_digest, sha256_file, verify_card, verify_pinned, write_card
from aicd.components.errors import IntegrityError

log = logging.getLogger(__name__)

_SEEN: dict[tuple[str, str], tuple[tuple, Any]] = {}


def _signature(path: Path) -> tuple:
    """What changes when any file under ``path`` is written, replaced, added or removed."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    out = []
    for p in files:
        st = p.stat()
        out.append((str(p), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
    return tuple(out)


def remembered(path: Path, key: str, compute: Callable[[], Any]) -> Any:
    """``compute()`` once per (``path``, ``key``) while the files under ``path`` stay as they were."""
    path = Path(path).resolve()
    signature = _signature(path)
    seen = _SEEN.get((str(path), key))
    if seen is not None and seen[0] == signature:
        return seen[1]
    value = compute()
    _SEEN[(str(path), key)] = (signature, value)
    return value


def file_sha256(path: Path) -> str:
    """``sha256_file`` remembered per file state (the GGUF conversion keys its cache on it)."""
    return remembered(path, "sha256", lambda: sha256_file(path))


def verify_model_source(uri: str, path: Path, digest: str | None, package: str | None = None) -> None:
    """Refuse ``path`` (what ``uri`` resolved to) unless a pin, its card or its distribution vouches for it.

    ``package``: the module of a ``pkg://`` URI. Raises IntegrityError naming the folder and the fix.
    """
    what = f"model {uri!r}"
    if digest:
        remembered(path, f"pin:{digest}", lambda: verify_pinned(path, digest, what) or True)
    elif package:  # before the card: a card.json written into site-packages is an extra file, not a voucher
        remembered(path, "record", lambda: verify_distribution(path, package, uri))
    elif path.is_dir() and (path / CARD).is_file():
        remembered(path, "card", lambda: verify_card(path))
    else:
        raise unvouched(uri, path)


def unvouched(uri: str, path: Path) -> IntegrityError:
    """The error for a card-less, unpinned local folder (also what ``aicd run``'s preflight reports)."""
    return IntegrityError(
        f"model {uri!r}: {path} has no {CARD} and no pinned digest, so nothing vouches for its files",
        f"pin its content digest: run `aicd digest {path}` and put the printed sha256:... in the spec's "
        "`candidates[].digest` (or pass it to the predictor as --base-digest); or use the aicd artifact "
        "with its card.json")


def _record_hash(value: str) -> str:
    """A RECORD entry's urlsafe-base64 sha256 as hex."""
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).hex()


def _distribution(root: Path, package: str) -> importlib.metadata.Distribution:
    """The installed distribution, in the site folder holding ``root``, that owns module ``package``."""
    site = root.parent
    for dist in importlib.metadata.distributions(path=[str(site)]):
        if any(f.parts and f.parts[0] == package for f in dist.files or ()):
            return dist
    raise IntegrityError(f"package {package!r} ({root}) belongs to no installed distribution with a RECORD, so "
                         "nothing vouches for its files",
                         f"install it with `python -m pip install --no-deps` (not as a copied folder), or pin "
                         f"its content digest: `aicd digest {root}`")


def verify_distribution(path: Path, package: str, uri: str) -> str:
    """Check every file under ``path`` (inside the installed package ``package``) against the distribution's
    RECORD: a changed, missing or extra file is refused. Returns the distribution's name and version."""
    path = Path(path).resolve()
    root = path if path.is_dir() and path.name == package else _package_root(path, package)
    dist = _distribution(root, package)
    recorded: dict[Path, Any] = {}
    for entry in dist.files or ():
        located = Path(dist.locate_file(entry)).resolve()
        if located == path or path in located.parents:
            recorded[located] = entry
    present = [path] if path.is_file() else [p.resolve() for p in path.rglob("*") if p.is_file()]
    problems = [f"extra file {p.relative_to(root.parent)}" for p in sorted(present)
                if p not in recorded and "__pycache__" not in p.parts]
    for located, entry in sorted(recorded.items()):
        if entry.hash is None:  # RECORD lists itself and compiled files without a hash
            continue
        if not located.is_file():
            problems.append(f"missing file {entry}")
        elif entry.hash.mode != "sha256":
            problems.append(f"{entry} is recorded with {entry.hash.mode}, not sha256")
        elif sha256_file(located) != _record_hash(entry.hash.value):
            problems.append(f"{entry} changed since it was installed")
    if problems:
        name = f"{dist.metadata['Name']}=={dist.version}"
        raise IntegrityError(f"model {uri!r} does not match what pip installed ({name}): " + "; ".join(problems),
                             f"reinstall it: `python -m pip install --no-deps --force-reinstall {name}`")
    log.debug("%s verified against %s %s's RECORD", uri, dist.metadata["Name"], dist.version)
    return f"{dist.metadata['Name']}=={dist.version}"


def _package_root(path: Path, package: str) -> Path:
    for parent in [path, *path.parents]:
        if parent.name == package:
            return parent
    raise IntegrityError(f"{path} is not inside package {package!r}", "use a pkg://<module>/<path> URI")


def digest_of(path: str | Path) -> str:
    """What to pin for ``path``: its verified card's digest when it has card.json, else its content digest."""
    path = Path(path)
    if not path.exists():
        raise IntegrityError(f"{path} does not exist", "give the folder (or GGUF file) of the model to pin")
    if path.is_dir() and (path / CARD).is_file():
        return verify_card(path)["digest"]
    return content_digest(path)


# The kind of card :func:`write_base_card` writes: a base model's files as whoever provided them recorded them.
BASE_KIND = "base-model"


def write_base_card(path: str | Path, **fields: Any) -> str:
    """Record the files of a trusted base model folder in a new card.json (``kind: base-model``), so it loads
    without a pin; returns the card's digest. An existing card is never replaced."""
    path = Path(path)
    if not path.is_dir():
        raise IntegrityError(f"{path} is not a folder", "give the model folder (a GGUF file is pinned instead)")
    if (path / CARD).exists():
        raise IntegrityError(f"{path} already has a {CARD}", f"pin its digest instead: `aicd digest {path}`")
    return write_card(path, BASE_KIND, source=str(path.resolve()), **fields)["digest"]
