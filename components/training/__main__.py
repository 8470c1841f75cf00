"""Training entry point, the same locally, under torchrun and inside a TrainJob.

    python -m aicd.components.training train-adapter --spec spec.yaml --dataset DIR --method NAME --out DIR \
        [--start CHAMPION_DIR]
    torchrun --nproc_per_node 2 -m aicd.components.training train-adapter ...
    python -m aicd.components.training train-from-scratch --spec spec.yaml --dataset DIR --out DIR

``--dataset`` and ``--out`` take local paths or pvc:// URIs. Bad input prints the message
and exits non-zero; SIGTERM saves a checkpoint and exits with status 143 (a retry resumes).
"""

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from aicd.components.errors import AicdError


def _path(uri: str, must_exist: bool) -> Path:
    if uri.startswith("pvc://"):
        return Path(os.environ.get("AICD_PVC_ROOT", "/mnt/pvc")) / uri[len("pvc://"):]
    if must_exist:
        from aicd.components.uris import resolve_data

        return resolve_data(uri)
    return Path(uri)


def _spec(args):
    from aicd.components.contracts import SECTIONS, step_spec
    from aicd.components.errors import SpecError
    from aicd.components.spec import load_spec

    if args.spec_json:  # the sections a step was given (launch_trainjob), not necessarily all of them
        data = json.loads(args.spec_json)
        if not isinstance(data, dict):
            raise SpecError(["--spec-json must be a JSON object of spec sections"], "--spec-json")
        return step_spec(data.get("name") or "", **{k: data[k] for k in SECTIONS if k in data})
    return load_spec(args.spec)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m aicd.components.training")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("train-adapter", "train-from-scratch"):
        cmd = sub.add_parser(name)
        source = cmd.add_mutually_exclusive_group(required=True)
        source.add_argument("--spec", help="spec YAML file")
        source.add_argument("--spec-json", help="the spec as one JSON string")
        cmd.add_argument("--dataset", required=True, help="data set artifact directory")
        cmd.add_argument("--out", required=True, help="where the Model artifact goes")
        cmd.add_argument("--checkpoint-root", help="overrides training.checkpoint.root")
        cmd.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
        cmd.add_argument("--summary", help="write the result summary here as JSON (rank 0)")
        if name == "train-adapter":
            cmd.add_argument("--method", required=True, help="name of one of training.methods")
            cmd.add_argument("--base", help="base model URI (default: the spec's first candidate)")
            cmd.add_argument("--start", help="Model artifact a dpo method starts from (the champion's adapter)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from aicd.components.training.loop import TrainingInterrupted

    try:
        spec = _spec(args)
        dataset, out = _path(args.dataset, True), _path(args.out, False)
        # pvc:// works here too: a TrainJob names its checkpoints and summary on the claim.
        checkpoints = str(_path(args.checkpoint_root, False)) if args.checkpoint_root else None
        common = {"checkpoint_root": checkpoints, "progress": not args.no_progress}
        if args.command == "train-adapter":
            from aicd.components.training.adapter import train_adapter

            start = _path(args.start, True) if args.start else None
            result = train_adapter(spec, dataset, args.method, out, base_uri=args.base, start_adapter=start, **common)
        else:
            from aicd.components.training.scratch import train_from_scratch

            result = train_from_scratch(spec, dataset, out, **common)
    except TrainingInterrupted as err:
        sys.stderr.write(f"{err}\n")
        return 143
    except AicdError as err:
        sys.stderr.write(f"error: {err}\n")
        return err.exit_code
    if args.summary and int(os.environ.get("RANK", "0")) == 0:
        _path(args.summary, False).write_text(json.dumps(result.summary(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
