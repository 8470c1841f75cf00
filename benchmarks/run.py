"""Run the performance suite: ``python -m benchmarks [--only NAME ...]`` (``make bench``).

Each benchmark module has ``declared() -> list[Figure]`` (the figures it reports,
with goals, so a benchmark that cannot run still shows its lines) and
``run(repeats) -> list[Figure]``. A benchmark whose subject has not landed raises
:class:`SubjectMissing` and its figures read "not run: <subject> missing".
"""

import argparse
import importlib
import logging
import sys
import time
import traceback
from pathlib import Path

from benchmarks.harness import MIN_REPEATS, RESULTS_DIR, Figure, SubjectMissing, not_run, one_thread
from benchmarks.report import machine, text_table, write_results

log = logging.getLogger("benchmarks")

BENCHMARKS = ("data", "evaluation", "training", "serving", "pipelines", "gpu")


def run_one(name: str, repeats: int) -> list[Figure]:
    module = importlib.import_module(f"benchmarks.bench_{name}")
    started = time.perf_counter()
    log.info("benchmark %s: start", name)
    try:
        figures = module.run(repeats)
    except SubjectMissing as err:
        log.warning("benchmark %s: not run: %s", name, err)
        return not_run(module.declared(), str(err))
    except Exception as err:  # noqa: BLE001 - one broken benchmark must not hide the others
        log.error("benchmark %s failed:\n%s", name, traceback.format_exc())
        return not_run(module.declared(), f"{type(err).__name__}: {err}"[:300], status="error")
    log.info("benchmark %s: done in %.0f s", name, time.perf_counter() - started)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these benchmarks")
    parser.add_argument("--repeats", type=int, default=MIN_REPEATS, help="timed runs per side (>= 3)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where results.json/.md go")
    parser.add_argument("--name", default="results", help="file name stem of the results")
    args = parser.parse_args(argv)
    if args.repeats < MIN_REPEATS:
        parser.error(f"--repeats must be at least {MIN_REPEATS}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    one_thread()
    started = time.perf_counter()
    figures: list[Figure] = []
    for name in args.only or BENCHMARKS:
        figures += run_one(name, args.repeats)
    elapsed = time.perf_counter() - started
    info = machine()
    json_path, md_path = write_results(figures, args.out, info, elapsed, args.name)
    print(text_table(figures))
    met = sum(f.met is True for f in figures)
    missed = sum(f.met is False for f in figures)
    absent = sum(f.status in ("not run", "skipped", "error") for f in figures)
    print(f"\ngoals met: {met}, not met: {missed}, not measured: {absent}; {elapsed:.0f} s; "
          f"results in {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
