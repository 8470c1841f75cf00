#!/usr/bin/env python3
"""Make the project's CRDs (tools/k8s/crds) acceptable to the tests' kube-apiserver 1.20.

Usage: crd-for-1.20.py OUT_DIR CRD.yaml...   (writes one transformed file per input into OUT_DIR)

Applied ONLY for the test server; the CRDs ship and install unchanged on a real cluster.
What 1.20 cannot take, and what the transform does about it:
- `default: ""`: 1.20 decodes an empty-string default as null and rejects the CRD -> dropped.
- `""` in a custom object: the server built here decodes it as null too (seen: an AppProject's
  `group: ""`, Argo CD's spelling of the core group, got "must be of type string: null") -> in
  the CRDs of NULLABLE_STRINGS (whose objects carry `""`), every `type: string` gets
  `nullable: true`, so such objects are accepted (stored as null).
- `x-kubernetes-validations` (CEL rules, 1.25+): unknown to 1.20 -> dropped (the rules are not
  checked by the test server; tests that need one check it themselves).
- `x-kubernetes-list-type: map` whose keys are neither required nor defaulted: 1.20 requires one
  of the two -> the list-map markers are dropped (the list becomes atomic).
"""

import sys
from pathlib import Path

import yaml

# libyaml when present: the InferenceService CRD is 2 MB, and the pure-Python parser takes seconds.
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_BASE_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class DUMPER(_BASE_DUMPER):  # no YAML aliases in the output: every schema node written in full
    def ignore_aliases(self, data):
        return True


NULLABLE_STRINGS = {"appprojects.argoproj.io"}


def nullable_strings(node) -> None:
    if isinstance(node, dict):
        if node.get("type") == "string":
            node["nullable"] = True
        for value in node.values():
            nullable_strings(value)
    elif isinstance(node, list):
        for value in node:
            nullable_strings(value)


def for_1_20(node):
    """Transform one parsed CRD document in place; returns it."""
    if isinstance(node, dict):
        if node.get("default") == "":
            del node["default"]
        node.pop("x-kubernetes-validations", None)
        for value in node.values():
            for_1_20(value)
        keys = node.get("x-kubernetes-list-map-keys")
        if keys:
            item = node.get("items") or {}
            props, required = item.get("properties") or {}, item.get("required") or []
            if not all(k in required or "default" in (props.get(k) or {}) for k in keys):
                node.pop("x-kubernetes-list-map-keys")
                node.pop("x-kubernetes-list-type", None)
    elif isinstance(node, list):
        for value in node:
            for_1_20(value)
    return node


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    for src in map(Path, argv[1:]):
        docs = [for_1_20(d) for d in yaml.load_all(src.read_text(), Loader=LOADER) if d]
        for doc in docs:
            if doc.get("metadata", {}).get("name") in NULLABLE_STRINGS:
                nullable_strings(doc["spec"]["versions"])
        target = out / src.name
        target.write_text(yaml.dump_all(docs, Dumper=DUMPER, sort_keys=False))
        print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
