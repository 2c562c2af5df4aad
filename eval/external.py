"""External suites: a user's own harness, run as a command once per task.

A suite YAML names the command and its tasks:

    name: my-bench
    category: software            # EdgeBench category, for reports
    command: python harness.py --model {checkpoint} --task {task_id} --result {out}
    tasks: [t1, t2]               # or tasks_file: tasks.txt (one id per line, # comments)
    timeout_s: 1800               # per task
    concurrency: 4                # tasks run at once
    env: {HARNESS_MODE: eval}     # added to the command's environment

The command is split with shlex (no shell) before the placeholders are filled, so a value with
spaces stays one argument; it runs in the YAML file's folder. Placeholders: {checkpoint} (path),
{endpoint} (OpenAI-compatible base URL), {task_id}, {out} (where the harness writes its result).
The result is a JSON object: `score` (0-1) and `success` required, `duration_s` (interaction
seconds; the wall time when absent) and `trajectory` (path of a trajectory file, relative to the
result file) optional. A time-out, a non-zero exit, or a missing or malformed result is recorded
in that task's `TaskResult` (status "timeout" or "error", score 0, the reason) and the run goes on.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import signal
import string
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from tqdm.auto import tqdm

from eval.errors import EvalError, read_mapping

PLACEHOLDERS = ("checkpoint", "endpoint", "task_id", "out")
STDERR_TAIL_CHARS = 2000


class ExternalSuiteError(EvalError, ValueError):
    """A suite YAML or its use that the user must fix; the message names the file and the key."""


class ExternalSuiteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, description="Suite name, used in reports")
    command: str = Field(..., description="Command template with {checkpoint} {endpoint} {task_id} {out}")
    tasks: list[str] | None = Field(None, description="Task ids")
    tasks_file: str | None = Field(None, description="File of task ids, one per line, relative to the YAML")
    timeout_s: float = Field(3600.0, gt=0, description="Time-out per task, seconds")
    category: str = Field("external", description="EdgeBench category of the suite")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment variables of the command")
    concurrency: int = Field(1, ge=1, description="Tasks run at the same time")

    @field_validator("command")
    @classmethod
    def _check_command(cls, command: str) -> str:
        try:
            argv = shlex.split(command)
        except ValueError as e:
            raise ValueError(f"cannot split into arguments: {e}") from None
        if not argv:
            raise ValueError("is empty")
        used = _placeholders(command)
        unknown = sorted(used - set(PLACEHOLDERS))
        if unknown:
            raise ValueError(f"unknown placeholder(s) {unknown}; allowed: {', '.join('{%s}' % p for p in PLACEHOLDERS)}")
        if "out" not in used:
            raise ValueError("must contain {out}: the path where the harness writes its JSON result")
        return command

    @model_validator(mode="after")
    def _one_task_source(self) -> "ExternalSuiteConfig":
        if (self.tasks is None) == (self.tasks_file is None):
            raise ValueError("give exactly one of 'tasks' or 'tasks_file'")
        return self


class HarnessResult(BaseModel):
    """What the harness writes at {out}; extra keys are kept by the harness, ignored here."""

    model_config = ConfigDict(extra="ignore")

    score: float = Field(..., ge=0.0, le=1.0)
    success: bool
    duration_s: float | None = Field(None, ge=0.0)
    trajectory: str | None = None


@dataclass
class TaskResult:
    task_id: str
    status: Literal["ok", "timeout", "error"]
    success: bool
    score: float
    duration_s: float  # interaction seconds the harness reports, else wall seconds of the command
    trajectory_path: str | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _placeholders(template: str) -> set[str]:
    try:
        return {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
    except ValueError as e:
        raise ValueError(f"bad placeholder syntax: {e}") from None


def _task_dir_name(task_id: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", task_id)[:80]
    if safe == task_id:
        return safe
    return f"{safe}-{hashlib.sha1(task_id.encode()).hexdigest()[:8]}"  # keep altered names distinct


@dataclass
class ExternalSuite:
    config: ExternalSuiteConfig
    path: Path  # the YAML file

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def category(self) -> str:
        return self.config.category

    @property
    def task_ids(self) -> list[str]:
        if self.config.tasks is not None:
            return list(self.config.tasks)
        return _read_tasks_file(self.path, self.path.parent / self.config.tasks_file)

    def run(self, checkpoint: str | None, endpoint: str | None, out_dir: Path,
            task_ids: list[str] | None = None, progress: bool = False) -> list[TaskResult]:
        """Run the command once per task (all of the suite's tasks by default); results in task order.
        Also writes them to out_dir/results.jsonl. `progress`: a bar over the tasks (on stderr) with
        the successes, time-outs and errors so far."""
        ids = self.task_ids if task_ids is None else list(task_ids)
        self._check_placeholders(checkpoint, endpoint)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        results: list[TaskResult | None] = [None] * len(ids)
        tally = {"success": 0, "timeout": 0, "error": 0}
        with tqdm(total=len(ids), desc=f"eval {self.name}", unit="task", disable=not progress, leave=False,
                  mininterval=0) as bar, \
                ThreadPoolExecutor(max_workers=self.config.concurrency) as pool:
            futures = {pool.submit(self._run_task, t, checkpoint, endpoint, out_dir): i for i, t in enumerate(ids)}
            for future in as_completed(futures):
                result = results[futures[future]] = future.result()
                if result.status != "ok":
                    tally[result.status] += 1
                elif result.success:
                    tally["success"] += 1
                bar.set_postfix(tally, refresh=False)
                bar.update()
        with open(out_dir / "results.jsonl", "w", encoding="utf-8") as f:
            for r in results:
                f.write(json.dumps(r.to_dict()) + "\n")
        return results

    def _check_placeholders(self, checkpoint: str | None, endpoint: str | None) -> None:
        used = _placeholders(self.config.command)
        for key, value in (("checkpoint", checkpoint), ("endpoint", endpoint)):
            if key in used and not value:
                raise ExternalSuiteError(f"{self.path}: command: uses {{{key}}} but no {key} was given")

    def _argv(self, task_id: str, checkpoint: str | None, endpoint: str | None, out: Path) -> list[str]:
        values = {"checkpoint": checkpoint or "", "endpoint": endpoint or "", "task_id": task_id, "out": str(out)}
        return [arg.format_map(values) for arg in shlex.split(self.config.command)]

    def _run_task(self, task_id: str, checkpoint: str | None, endpoint: str | None, out_dir: Path) -> TaskResult:
        task_dir = out_dir / _task_dir_name(task_id)
        task_dir.mkdir(parents=True, exist_ok=True)
        result_path = (task_dir / "result.json").resolve()
        result_path.unlink(missing_ok=True)  # a stale result from an earlier run must not count
        argv = self._argv(task_id, checkpoint, endpoint, result_path)
        env = {**os.environ, **self.config.env}
        started = time.monotonic()
        with open(task_dir / "stdout.log", "wb") as out, open(task_dir / "stderr.log", "wb") as err:
            try:
                proc = subprocess.Popen(argv, cwd=self.path.parent, env=env, stdout=out, stderr=err,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
            except OSError as e:
                return TaskResult(task_id, "error", False, 0.0, 0.0, error=f"cannot start {argv[0]!r}: {e}")
            try:
                code = proc.wait(timeout=self.config.timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                wall = time.monotonic() - started
                return TaskResult(task_id, "timeout", False, 0.0, wall,
                                  error=f"timed out after {self.config.timeout_s:g} s")
        wall = time.monotonic() - started
        if code != 0:
            tail = (task_dir / "stderr.log").read_text(errors="replace")[-STDERR_TAIL_CHARS:].strip()
            return TaskResult(task_id, "error", False, 0.0, wall, error=f"exit code {code}: {tail}")
        return _read_result(task_id, result_path, wall)


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the command and everything it started (it leads its own session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _read_result(task_id: str, path: Path, wall_s: float) -> TaskResult:
    if not path.exists():
        return TaskResult(task_id, "error", False, 0.0, wall_s, error=f"no result written at {path}")
    try:
        result = HarnessResult.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return TaskResult(task_id, "error", False, 0.0, wall_s, error=f"{path}: not valid JSON: {e}")
    except ValidationError as e:
        return TaskResult(task_id, "error", False, 0.0, wall_s, error=f"{path}: {_first_problem(e)}")
    trajectory = str((path.parent / result.trajectory).resolve()) if result.trajectory else None
    duration = wall_s if result.duration_s is None else result.duration_s
    return TaskResult(task_id, "ok", result.success, result.score, duration, trajectory_path=trajectory)


def _first_problem(e: ValidationError) -> str:
    err = e.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or "(top level)"
    return f"{key}: {err['msg']}"


def _read_tasks_file(yaml_path: Path, tasks_path: Path) -> list[str]:
    try:
        lines = tasks_path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ExternalSuiteError(f"{yaml_path}: tasks_file: cannot read {tasks_path}: {e.strerror}") from None
    ids = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not ids:
        raise ExternalSuiteError(f"{yaml_path}: tasks_file: {tasks_path} lists no tasks")
    return ids


def load_external_suite(path: str | Path) -> ExternalSuite:
    """Read and validate a suite YAML; errors name the file and the key."""
    path = Path(path)
    raw = read_mapping(path, ExternalSuiteError, keys="name, command, tasks, ...")
    try:
        config = ExternalSuiteConfig.model_validate(raw)
    except ValidationError as e:
        raise ExternalSuiteError(f"{path}: {_first_problem(e)}") from None
    suite = ExternalSuite(config, path.resolve())
    suite.task_ids  # a missing or empty tasks_file is a load-time error
    return suite


def is_external_suite(name: str) -> bool:
    """Suite names in a recipe that end in .yaml/.yml are external suite files."""
    return name.endswith((".yaml", ".yml"))

