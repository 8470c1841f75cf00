"""Data validation: rows per second on one core, and peak memory of an ingest.

Rows/s: ``validate_rows`` (validation, duplicate and leakage tracking, split assignment)
over generated short classification rows, CPU time on one thread, row hash v1 (baseline)
and v2 (treatment, the goal's side) taking turns. Correctness: on both sides the outcome
counts equal the planted ones (known numbers of empty texts, unknown labels and exact
duplicates; every other row valid).

Peak memory: ``ingest_dataset`` (row hash v2) of generated JSONL files of N and 2N rows,
each in a fresh subprocess (peak RSS, VmHWM, minus the RSS after importing the ingest code
and pyarrow), the lower of two runs per size (a run's fixed part varies by a few MB).
"Bounded" is read as: doubling the file adds at most a quarter of the added bytes to the
peak (the file is never held whole; a fixed working set does not count against it). The
larger file loaded whole with ``json.loads`` per line is shown for scale.
"""

import json
import logging
import random
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from benchmarks.harness import ROOT_DIR, Figure, Goal, SubjectMissing, alternate, apply_check, rate_figure
from benchmarks.models import WORDS

log = logging.getLogger(__name__)

NAME = "data"
ROWS = 100_000
BIG_ROWS = 300_000  # about 43 MB of JSONL
LABELS = ["negative", "neutral", "positive"]
PLANTED = {"empty-text": 500, "unknown-label": 300, "duplicate": 1000}


def declared() -> list[Figure]:
    return [Figure(NAME, "validation rows/s on one core", "rows/s", Goal(">=", 150_000, on="treatment",
                                                                       text=">= 150,000 rows/s")),
            Figure(NAME, "ingest peak memory: growth added by doubling the JSONL file", "MB",
                   Goal("<=", 0.25, text="<= 0.25 MB per MB"))]


def _subject():
    try:
        from aicd.components.data.ingest import ingest_dataset, validate_rows
    except ImportError as err:
        raise SubjectMissing("components/data", str(err)) from err
    return ingest_dataset, validate_rows


def spec(uri: str, row_hash: str = "v2") -> dict:
    """The review-sentiment example spec with a local JSONL source of (text, label) rows."""
    import yaml

    out = yaml.safe_load((ROOT_DIR / "examples" / "review-sentiment" / "spec.yaml").read_text())
    out["task"].update({"text_field": "text", "label_field": "label", "labels": LABELS})
    out["data"] = {"sources": [{"uri": uri, "format": "jsonl"}],
                   "quality": {"max_bad_fraction": 0.5, "min_tokens": 1, "max_tokens": 512}, "row_hash": row_hash}
    return out


def rows(n: int, seed: int = 0, planted: dict[str, int] | None = None, offset: int = 0) -> list[dict]:
    """Short review rows (8-30 words), each text unique, with planted bad rows at the end."""
    rng = random.Random(seed)
    out = [{"text": f"{offset + i} " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 30))),
            "label": LABELS[i % 3]} for i in range(n)]
    planted = planted or {}
    bad = []
    bad += [{"text": "   ", "label": "neutral"}] * planted.get("empty-text", 0)
    bad += [{"text": f"unknown label row {i}", "label": "great"} for i in range(planted.get("unknown-label", 0))]
    bad += [dict(out[i]) for i in range(planted.get("duplicate", 0))]
    return out[: n - len(bad)] + bad


def expected_outcome(n: int) -> int:
    return n - sum(PLANTED.values())


def write_jsonl(path: Path, n: int) -> int:
    with open(path, "w", encoding="utf-8") as fh:
        for start in range(0, n, 50_000):
            fh.write("".join(json.dumps(r) + "\n" for r in rows(min(50_000, n - start), seed=start, offset=start)))
    return path.stat().st_size


# VmHWM is the peak RSS of this process image; ru_maxrss would carry over the parent's RSS
# from before the fork (Linux keeps it across execve).
_PEAK = """
import json, re, sys, psutil
def hwm():
    with open("/proc/self/status") as fh:
        return int(re.search(r"VmHWM:\\s+(\\d+) kB", fh.read()).group(1)) * 1024
{imports}base = psutil.Process().memory_info().rss
{body}
print(json.dumps({{"base": base, "peak": hwm(), "out": out}}))
"""
_INGEST = """
from aicd.components.data.ingest import ingest_dataset
spec = json.loads(sys.argv[1])
out = ingest_dataset(spec, sys.argv[2]).counts
"""
_WHOLE = """
spec = json.loads(sys.argv[1])
with open(spec["data"]["sources"][0]["uri"], encoding="utf-8") as fh:
    out = len([json.loads(line) for line in fh])
"""


def peak_growth(body: str, *args: str) -> tuple[int, object]:
    """(peak RSS growth in bytes, result) of a snippet in a fresh interpreter with the imports done."""
    # Libraries are imported before the base reading: their size is not the data's.
    import_first = "import aicd.components.data.ingest, pyarrow, pyarrow.parquet\n" if "ingest_dataset" in body else ""
    code = _PEAK.format(imports=import_first, body=body)
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT_DIR,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe failed: {done.stderr.strip()[-500:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return report["peak"] - report["base"], report["out"]


def run(repeats: int) -> list[Figure]:
    ingest_dataset, validate_rows = _subject()
    speed_decl, mem_decl = declared()
    data = rows(ROWS, planted=PLANTED)
    v1_spec, v2_spec = spec("unused.jsonl", "v1"), spec("unused.jsonl", "v2")
    trial = alternate(lambda: validate_rows(v1_spec, data), lambda: validate_rows(v2_spec, data), repeats=repeats)

    def planted_outcome(v1: Counter, v2: Counter):
        for scheme, outcome in (("v1", v1), ("v2", v2)):
            bad = {reason: outcome.get(reason, 0) for reason in PLANTED}
            assert bad == PLANTED, f"row_hash {scheme}: quarantine counts {bad}, planted {PLANTED}"
            good = sum(outcome.get(s, 0) for s in ("train", "validation", "test"))
            assert good == expected_outcome(ROWS), f"row_hash {scheme}: {good} valid rows, expected " \
                f"{expected_outcome(ROWS)}"

    speed = rate_figure(NAME, speed_decl.name, "rows/s", trial, ROWS, speed_decl.goal, check=planted_outcome,
                        baseline_label="row_hash v1", treatment_label="row_hash v2")
    speed.note = (f"{ROWS:,} rows of 8-30 words, {sum(PLANTED.values())} planted bad rows; "
                  f"v1 and v2 alternate in one run")
    with tempfile.TemporaryDirectory(prefix="aicd-bench-data-") as tmp:
        tmp = Path(tmp)
        sizes, growth, counts = {}, {}, {}
        for n in (BIG_ROWS // 2, BIG_ROWS):
            path = tmp / f"big-{n}.jsonl"
            sizes[n] = write_jsonl(path, n)
            probes = [peak_growth(_INGEST, json.dumps(spec(str(path))), str(tmp / f"dataset-{n}-{i}"))
                      for i in range(2)]
            growth[n], counts[n] = min(g for g, _ in probes), probes[0][1]
            if n == BIG_ROWS:
                whole_growth, n_read = peak_growth(_WHOLE, json.dumps(spec(str(path))))
            path.unlink()
    mb, small, big = 2**20, BIG_ROWS // 2, BIG_ROWS
    memory = Figure(NAME, mem_decl.name, "MB", mem_decl.goal, baseline=(sizes[big] - sizes[small]) / mb,
                    treatment=(growth[big] - growth[small]) / mb, baseline_label="file added",
                    treatment_label="peak growth added")
    memory.details = {"rows": [small, big], "file_bytes": [sizes[small], sizes[big]],
                      "ingest_peak_growth_bytes": [growth[small], growth[big]],
                      "read_whole_peak_growth_bytes": whole_growth, "counts": counts}
    memory.note = (f"ingest peak growth {growth[small] / mb:.0f} MB for {sizes[small] / mb:.0f} MB ({small:,} rows), "
                   f"{growth[big] / mb:.0f} MB for {sizes[big] / mb:.0f} MB ({big:,} rows); reading the larger "
                   f"file whole with json.loads grows {whole_growth / mb:.0f} MB")

    def all_rows_kept(_, __):
        assert n_read == big, f"read {n_read} lines, wrote {big}"
        for n, split_counts in counts.items():
            assert sum(split_counts.values()) == n, f"ingest kept {sum(split_counts.values())} of {n} valid rows"

    apply_check(memory, all_rows_kept, None, None)
    return [speed, memory]
