"""Run a pipeline on this machine with kfp.local, the project's cache and readable progress.

kfp.local's SubprocessRunner runs every step in the current environment. Around its
per-task executor this module adds: the content-hash cache (pipelines/cache.py),
one progress line per task, and each task's log in a file instead of the terminal
(shown when the task fails). Steps run without kfp's per-step ``pip install kfp``
preamble when it would only reinstall the kfp already running here.
"""

import contextlib
import logging
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aicd.components.errors import AicdError
from aicd.pipelines.cache import ContentCache

log = logging.getLogger(__name__)
_CONTEXT = threading.local()


class PipelineRunError(AicdError):
    """A step of a local run failed."""


@dataclass
class TaskRecord:
    name: str
    status: str  # "ran" | "cached" | "failed"
    seconds: float
    outputs: dict[str, Any] = field(default_factory=dict)
    log_file: str | None = None
    cacheable: bool = True
    cpu_seconds: float = 0.0  # user+sys of the step's subprocess (kfp.local runs steps one at a time)


@dataclass
class LocalRun:
    pipeline: str
    root: Path
    tasks: list[TaskRecord] = field(default_factory=list)
    seconds: float = 0.0

    def task(self, name: str) -> TaskRecord | None:
        return next((t for t in self.tasks if t.name == name), None)

    def artifact_path(self, task: str, output: str) -> Path | None:
        record = self.task(task)
        value = record.outputs.get(output) if record else None
        return Path(value.path) if hasattr(value, "path") else None


Listener = Callable[[str, TaskRecord], None]


def _log_to_file(full_command: list[str], env_vars: dict[str, str] | None = None) -> int:
    """Stand-in for kfp.local's run_local_subprocess that writes the step's output to a file."""
    import os
    import subprocess

    target = getattr(_CONTEXT, "log_file", None)
    env = {**os.environ, **(env_vars or {})}
    if target is None:
        return subprocess.run(full_command, env=env, check=False).returncode
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    with open(target, "a", encoding="utf-8") as fh:
        return subprocess.run(full_command, env=env, stdout=fh, stderr=subprocess.STDOUT, check=False).returncode


_KFP_INSTALL = re.compile(r"pip install --quiet --no-warn-script-location (.*) && \"\$0\" \"\$@\"\s*$")


def without_kfp_install(command: list[str]) -> list[str]:
    """The command without kfp's preamble ``sh -c '<pip install kfp==V> && "$0" "$@"'`` when it installs
    only the kfp this process already runs (each step's pip then cost ~0.5 s CPU for nothing);
    unchanged when the component asks for any other package."""
    import kfp

    if len(command) < 4 or command[:2] != ["sh", "-c"] or command[2].count("pip install") != 1:
        return command
    pins = _KFP_INSTALL.findall(command[2])
    wanted = f"'kfp=={kfp.__version__}' '--no-deps' 'typing-extensions>=3.7.4,<5; python_version<\"3.9\"'"
    return command[3:] if pins == [wanted] else command


def _local_executors(executors: dict, label: str) -> dict:
    """``executors`` with ``label``'s container command stripped of a redundant kfp install."""
    spec = executors[label]
    if spec.WhichOneof("spec") != "container":
        return executors
    command = list(spec.container.command)
    stripped = without_kfp_install(command)
    if stripped == command:
        return executors
    local_spec = type(spec)()
    local_spec.CopyFrom(spec)
    del local_spec.container.command[:]
    local_spec.container.command.extend(stripped)
    return {**executors, label: local_spec}


def _tail(path: str | None, lines: int = 40) -> str:
    if not path or not Path(path).is_file():
        return ""
    return "\n".join(Path(path).read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def _instrumented(run: LocalRun, cache: ContentCache | None, listener: Listener | None,
                  verbose: bool) -> Iterator[None]:
    """Wrap kfp.local's execute_single_task with the cache, progress and log files."""
    from kfp.local import executor_input_utils, logging_utils, status, subprocess_task_handler
    from kfp.local.orchestrator import task_executor
    from kfp.local.orchestrator.orchestrator_utils import OrchestratorUtils

    original = task_executor.execute_single_task

    def execute(**kw):
        task_spec, components = kw["task_spec"], kw["components"]
        component_name = task_spec.component_ref.name
        component_spec = components[component_name]
        executor_spec = kw["executors"][component_spec.executor_label]
        name = kw["task_name"]
        task_root = executor_input_utils.construct_local_task_root(
            kw["pipeline_root"], kw["pipeline_resource_name"],
            executor_input_utils.get_local_task_resource_name(component_name))
        record = TaskRecord(name=name, status="running", seconds=0.0, log_file=str(run.root / "logs" / f"{name}.log"),
                            cacheable=bool(task_spec.caching_options.enable_cache))
        started = time.monotonic()
        if listener:
            listener("start", record)
        key = None
        if cache is not None and record.cacheable and executor_spec.WhichOneof("spec") == "container":
            arguments = OrchestratorUtils.make_task_arguments(task_inputs_spec=task_spec.inputs,
                                                              io_store=kw["io_store"])
            key = cache.key(component_spec, executor_spec, arguments)
            hit = cache.get(key, task_root)
            if hit is not None:
                record.status, record.outputs = "cached", hit
                record.seconds = time.monotonic() - started
                run.tasks.append(record)
                if listener:
                    listener("end", record)
                return hit, status.Status.SUCCESS
        _CONTEXT.log_file = None if verbose else record.log_file
        cpu_before = _children_cpu()
        try:
            # The cache key above saw the component as compiled; only the local command loses the install.
            outputs, task_status = original(**{**kw, "executors": _local_executors(kw["executors"],
                                                                                 component_spec.executor_label)})
        finally:
            _CONTEXT.log_file = None
        record.seconds = time.monotonic() - started
        record.cpu_seconds = _children_cpu() - cpu_before
        record.outputs = outputs
        record.status = "ran" if task_status == status.Status.SUCCESS else "failed"
        if key is not None and record.status == "ran":
            cache.put(key, outputs)
        run.tasks.append(record)
        if listener:
            listener("end", record)
        return outputs, task_status

    with contextlib.ExitStack() as stack:
        stack.enter_context(_patched(task_executor, "execute_single_task", execute))
        if not verbose:
            stack.enter_context(_patched(subprocess_task_handler, "run_local_subprocess", _log_to_file))
            stack.enter_context(_patched(logging_utils, "local_logger_context", _quiet_root_logger))
            stack.enter_context(_patched(logging_utils, "print_horizontal_line", lambda: None))
        yield


def _children_cpu() -> float:
    """User+sys CPU seconds of this process's finished children: a step's CPU is the difference."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def _patched(module, name: str, value) -> Iterator[None]:
    original = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, original)


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """Stand-in for kfp.local's logger context: its per-task INFO lines become our progress lines."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.setLevel(level)


@contextlib.contextmanager
def _runner(name: str, root: Path, arguments: dict[str, Any]) -> Iterator[None]:
    """kfp.local initialised with the named runner for the duration of a run."""
    from kfp import local

    if name == "subprocess":
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
        yield
        return
    if name != "docker":
        raise AicdError(f"unknown local runner {name!r}", "use --runner subprocess (default) or --runner docker")
    from aicd.pipelines import containers

    containers.prepare_root(root)
    runner = containers.docker_runner(mounts=containers.spec_paths(arguments))
    local.init(runner=runner, pipeline_root=str(root), raise_on_error=True)
    with containers.kept_exit_codes(runner, lambda: getattr(_CONTEXT, "log_file", None)):
        yield


def run_local(pipeline, arguments: dict[str, Any], workdir: str | Path = ".aicd", *, cache: bool = True,
              cache_dir: str | Path | None = None, listener: Listener | None = None,
              verbose: bool = False, code_digest: str | None = None, runner: str = "subprocess") -> LocalRun:
    """Run a compiled-in-memory pipeline with kfp.local (SubprocessRunner, current environment).

    ``runner="docker"`` runs every step in its role image instead (kfp.local.DockerRunner
    through ``DOCKER_HOST``, e.g. podman's socket), pod-like (pipelines/containers.py), with
    the local paths the spec names mounted.

    Artifacts go under ``<workdir>/runs``, cached outputs under ``cache_dir``
    (default ``<workdir>/cache``). ``code_digest`` stands for the aicd.components sources
    in cache keys (default: their real digest, so editing step logic re-runs the step). Raises
    :class:`PipelineRunError` naming the failed step and showing the end of its log.
    """
    workdir = Path(workdir).resolve()
    root = workdir / "runs"
    root.mkdir(parents=True, exist_ok=True)
    name = getattr(pipeline, "name", "pipeline")
    run = LocalRun(pipeline=name, root=root / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 1000000:06d}")
    store = ContentCache(Path(cache_dir) if cache_dir else workdir / "cache", code_digest) if cache else None
    run.root.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        with warnings.catch_warnings(), _runner(runner, run.root, arguments), \
                _instrumented(run, store, listener, verbose):
            # SubprocessRunner runs the role images' code in this environment, as intended.
            warnings.filterwarnings("ignore", message="You may be attemping to run a task", category=RuntimeWarning)
            # Display names, GPUs and resources are for the cluster; locally they are rightly ignored.
            warnings.filterwarnings("ignore", message=".*have no effect in the current local runner")
            pipeline(**arguments)
    except RuntimeError as err:
        failed = next((t for t in run.tasks if t.status == "failed"), None)
        if failed is None:
            raise
        raise PipelineRunError(f"step {failed.name} of pipeline {name} failed; the end of its log "
                               f"({failed.log_file}):\n{_tail(failed.log_file)}",
                               "fix the cause above and run again; finished steps come from the cache") from err
    finally:
        run.seconds = time.monotonic() - started
    return run
