"""The fingerprint of a spec's data sources: what decides whether ingest must run again.

Ingest reads files behind URIs that may change under the same URI, so its cache key
cannot be the spec alone. ``sources_fingerprint`` digests the bytes every source URI
resolves to (a file, or every file of a directory); ingest is cached on it.
"""

import hashlib
from pathlib import Path

from aicd.components.cards import sha256_file
from aicd.components.spec import DataSpec
from aicd.components.uris import resolve_data


def path_fingerprint(path: Path) -> str:
    """sha256 over the relative names and bytes of a file or of every file under a directory."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        name = "." if file == path else file.relative_to(path).as_posix()
        digest.update(f"{name} {sha256_file(file)}\n".encode())
    return digest.hexdigest()


def sources_fingerprint(data: DataSpec) -> str:
    """``sha256:<hex>`` over every source's URI and the content it resolves to (UriError when one does not)."""
    digest = hashlib.sha256()
    for source in data.sources:
        digest.update(f"{source.uri} {path_fingerprint(resolve_data(source.uri))}\n".encode())
    return "sha256:" + digest.hexdigest()
