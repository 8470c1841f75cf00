"""Role image sizes and build times: ``python -m benchmarks.images [--cold]`` (``make bench-images``).

Three builds through the same script as ``make images`` (tools/podman/images.sh):
cold (``--cold``: the Debian base remade and every layer built again), warm (nothing
changed: every layer from the cache) and after a code change (one comment added to
components/__init__.py, then removed: only the project's layers are rebuilt). Wall-clock
seconds on this machine, as a person waits for them; the machine is shared, so they vary.
Writes ``benchmarks/results/images.json`` and ``images.md``; a run without ``--cold``
keeps the cold figures of the last cold run.
"""

import argparse
import json
import os
import platform
import re
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "podman" / "images.sh"
RESULTS = ROOT / "benchmarks" / "results"
ENV = {**os.environ, "CONTAINERS_CONF": str(ROOT / "tools" / "podman" / "containers.conf")}
LINE = re.compile(r"images\.sh: (?:built|made) (\S+) in (\d+) s")


def build(**env: str) -> dict:
    """One `images.sh build`: total wall seconds and each image's seconds, from the script's lines."""
    started = time.monotonic()
    proc = subprocess.run([str(SCRIPT), "build"], env={**ENV, **env}, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"images.sh build failed:\n{proc.stderr[-3000:]}")
    steps = {name: int(s) for name, s in LINE.findall(proc.stderr)}
    return {"total_s": round(time.monotonic() - started, 1), "images_s": steps}


def sizes() -> dict:
    names = subprocess.run([str(SCRIPT), "names"], env=ENV, capture_output=True, text=True, check=True).stdout.split()
    out = {}
    for name in names:
        size = subprocess.run(["podman", "image", "inspect", "--format", "{{.Size}}", name], env=ENV,
                              capture_output=True, text=True, check=True).stdout.strip()
        out[name] = round(int(size) / 1e6)
    return out


def after_code_change() -> dict:
    init = ROOT / "components" / "__init__.py"
    original = init.read_text()
    try:
        init.write_text(original + "# benchmarks.images: a code change\n")
        changed = build()
    finally:
        init.write_text(original)
    build()  # back to the committed source (its layers are still cached)
    return changed


def write(results: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "images.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["# Role images: sizes and build times", "",
             "Wall-clock seconds of `make images` (tools/podman/images.sh, podman) on this machine,",
             f"{results['machine']}. Shared with other work while measured: times vary.", "",
             "| build | total s | per image s |", "|---|---|---|"]
    for kind in ("cold", "warm", "code_change"):
        run = results.get(kind)
        if run:
            per = ", ".join(f"{k.split('/')[-1]} {v}" for k, v in run["images_s"].items())
            lines.append(f"| {kind.replace('_', ' ')} | {run['total_s']} | {per} |")
    lines += ["", "Sizes as podman reports them, each counting its shared layers: the three roles share",
              "their first layers (the Python base and the torch layer), which a node pulls once.",
              "", "| image | size MB |", "|---|---|"]
    lines += [f"| {name} | {mb:,} |" for name, mb in results["sizes_mb"].items()]
    lines += ["", f"measured {results['created']}", ""]
    (RESULTS / "images.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.images")
    parser.add_argument("--cold", action="store_true", help="also a cold build (the base remade, no layer cache)")
    args = parser.parse_args(argv)
    previous = json.loads((RESULTS / "images.json").read_text()) if (RESULTS / "images.json").exists() else {}
    results = {"kind": "images", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "machine": f"{os.cpu_count()} cores, {platform.platform()}",
               "cold": build(NO_CACHE="1") if args.cold else previous.get("cold")}
    results["warm"] = build()
    results["code_change"] = after_code_change()
    results["sizes_mb"] = sizes()
    write(results)
    print((RESULTS / "images.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
