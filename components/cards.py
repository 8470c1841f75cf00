"""Artifact cards and atomic writes (docs/design.md section 4).

Every artifact directory (data set, adapter, model, evaluation) carries a
``card.json``: what it is, its lineage, and the sha256 of every file in it.
:func:`verify_card` refuses a directory whose files differ from the card (a
flipped byte, a missing file, an extra file). Every artifact is written under a
temporary name beside its final path and renamed into place, so a crash never
leaves a directory that looks complete.
"""

import contextlib
import hashlib
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aicd.components.errors import IntegrityError

CARD = "card.json"
CARD_VERSION = 1
_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _files(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under root except the card."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.relative_to(root).as_posix() != CARD:
            out[path.relative_to(root).as_posix()] = sha256_file(path)
    return out


def artifact_digest(files: dict[str, str]) -> str:
    """One digest for a whole artifact: the sha256 over its sorted file digests."""
    joined = "\n".join(f"{name} {digest}" for name, digest in sorted(files.items()))
    return "sha256:" + hashlib.sha256(joined.encode()).hexdigest()


def canonical_json(card: dict[str, Any]) -> bytes:
    """The card's bytes that its digest covers: every field but ``digest``, sorted keys, no spaces."""
    fields = {k: v for k, v in card.items() if k != "digest"}
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def card_digest(card: dict[str, Any]) -> str:
    """The digest of an artifact: sha256 over its card's canonical JSON (the files table included), so
    editing any field (``labels``, ``base_model``, metrics) changes it as surely as editing a file."""
    return "sha256:" + hashlib.sha256(canonical_json(card)).hexdigest()


def model_content_digest(card: dict[str, Any]) -> str:
    """What a model artifact computes, without how or when it was made: sha256 over its kind, its files
    table (weights, configs, tokenizer) and the base model it applies to (``base_digest``).

    Two runs that wrote the same files share it while their card digests differ: the card also covers
    training seconds, throughput and peak memory. The gate uses it to tell a retrained copy of the
    serving champion from a new model.
    """
    same = {"kind": card.get("kind"), "files": card["files"], "base_digest": card.get("base_digest")}
    return "sha256:" + hashlib.sha256(canonical_json(same)).hexdigest()


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a file under a temporary name in the same folder, then rename it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_card(root: str | Path, kind: str, **fields: Any) -> dict[str, Any]:
    """Hash every file under root and write ``card.json`` beside them.

    ``kind`` is ``dataset``, ``adapter``, ``model`` or ``evaluation``; ``fields``
    are the lineage and figures of that kind (base model, metrics, fingerprint, ...).
    """
    root = Path(root)
    files = _files(root)
    card = json.loads(json.dumps({"card_version": CARD_VERSION, "kind": kind, **fields, "files": files},
                                 default=str))  # the digest covers exactly what card.json will hold
    card["digest"] = card_digest(card)
    atomic_write_text(root / CARD, json.dumps(card, indent=2, sort_keys=True, default=str) + "\n")
    return card


def read_card(root: str | Path) -> dict[str, Any]:
    """The card of an artifact directory, without checking its files."""
    path = Path(root) / CARD
    if not path.is_file():
        raise IntegrityError(f"{root} has no {CARD}: it is not an aicd artifact or was not written completely",
                             "produce it again with the aicd step that makes it")
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise IntegrityError(f"{path} is not valid JSON ({err})", "produce the artifact again") from None
    if not isinstance(card, dict) or not isinstance(card.get("files"), dict):
        raise IntegrityError(f"{path} has no `files` table", "produce the artifact again")
    return card


def verify_card(root: str | Path, kind: str | None = None) -> dict[str, Any]:
    """Check every file against the card; return the card or raise IntegrityError."""
    root = Path(root)
    card = read_card(root)
    if card.get("digest") != card_digest(card):  # first: a forged `kind` or `files` must not steer the checks
        raise IntegrityError(f"{root}: the card's digest does not match its fields and files table",
                             "the card was edited; produce the artifact again")
    if kind is not None and card.get("kind") != kind:
        raise IntegrityError(f"{root} is a {card.get('kind')!r} artifact, expected {kind!r}",
                             f"pass a {kind} artifact")
    expected: dict[str, str] = card["files"]
    actual = _files(root)
    problems = []
    for name in sorted(set(expected) - set(actual)):
        problems.append(f"missing file {name}")
    for name in sorted(set(actual) - set(expected)):
        problems.append(f"extra file {name}")
    for name in sorted(set(expected) & set(actual)):
        if expected[name] != actual[name]:
            problems.append(f"{name} changed (sha256 {actual[name][:12]}..., card says {expected[name][:12]}...)")
    if problems:
        raise IntegrityError(f"{root} does not match its card: " + "; ".join(problems),
                             "the artifact was modified or damaged; produce it again and never edit it in place")
    return card


CRASH_ENV = "AICD_CRASH_AT"  # kill drills: the named point SIGKILLs the process (tests of crash safety)


def crash_point(name: str) -> None:
    """SIGKILL this process here when ``AICD_CRASH_AT`` names this point (a real kill, for drills)."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _fsync_tree(root: Path) -> None:
    """Flush every file and folder under ``root`` (then ``root``) to disk."""
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        _fsync(path)
    _fsync(root)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; rename it to ``final`` on success.

    On an exception the temporary directory is removed and ``final`` is untouched.
    Everything written is fsynced (files, then folders) before the rename, and the parent
    after it. An existing ``final`` is moved aside to ``.NAME.old-PID`` first; a kill
    between the two renames leaves that complete copy, which :func:`clean_stale_temporaries`
    (and :func:`recover_dir`) put back, so the folder is never lost.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        _fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        crash_point(f"atomic-dir:{final.name}:between-renames")
    os.replace(tmp, final)
    _fsync(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def recover_dir(final: str | Path) -> bool:
    """Put back ``final`` from its ``.NAME.old-*`` copy when a kill fell between atomic_dir's renames."""
    final = Path(final)
    if final.exists() or not final.parent.is_dir():
        return False
    olds = sorted(final.parent.glob(f".{final.name}.old-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    if not olds:
        return False
    os.replace(olds[0], final)
    _fsync(final.parent)
    return True


def clean_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove ``.name.*.tmp`` / ``.name.old-*`` leftovers of interrupted writes; an ``.old-`` copy whose
    folder is missing is put back instead (a kill between atomic_dir's two renames)."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for path in list(folder.iterdir()):
        if path.name.startswith(".") and ".old-" in path.name and path.is_dir():
            name = path.name[1:].rsplit(".old-", 1)[0]
            if recover_dir(folder / name):  # the only complete copy: a kill fell between two renames
                continue
        if path.exists() and path.name.startswith(".") and (path.name.endswith(".tmp") or ".old-" in path.name):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def content_digest(path: str | Path) -> str:
    """The digest of a model folder's files alone (card.json left out), or of one file: what a spec or a
    predictor pins for a folder that has no card (``candidates[].digest``, ``--base-digest``)."""
    path = Path(path)
    return artifact_digest({path.name: sha256_file(path)} if path.is_file() else _files(path))


def verify_pinned(path: str | Path, pin: str, what: str) -> dict[str, Any] | None:
    """Check a model folder against a pinned digest: its verified card's digest or its content digest must
    equal ``pin``. A folder whose card.json was deleted passes only on its content digest. Returns the card
    (None without one) or raises IntegrityError naming the folder and the fix."""
    path = Path(path)
    if path.is_dir() and (path / CARD).is_file():
        card = verify_card(path)
        if pin in (card["digest"], artifact_digest(card["files"])):
            return card
        raise IntegrityError(f"{what} {path} has digest {card['digest']} (content {artifact_digest(card['files'])}), "
                             f"not the pinned {pin}", "serve or evaluate the artifact that was pinned, or pin this one")
    actual = content_digest(path)
    if actual != pin:
        raise IntegrityError(f"{what} {path} has no {CARD} and its content digest {actual} is not the pinned {pin}",
                             "restore the artifact with its card.json (or produce it again with the aicd step that "
                             "made it); if you trust these files as they are, pin their content digest instead "
                             "(`candidates[].digest` in the spec, or --base-digest)")
    return None


def read_verified_json(root: str | Path, name: str, kind: str | None = None) -> Any:
    """``root/name`` parsed, after ``root``'s card verified every file (and ``kind``): what a gate reads
    (reports, comparisons, blessings) is refused if anything in its artifact changed."""
    verify_card(root, kind=kind)
    path = Path(root) / name
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise IntegrityError(f"{path} cannot be read as JSON ({err})", "produce the artifact again") from None
