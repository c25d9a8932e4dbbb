"""A user's code: the task file ``[run] task`` names or the script ``[run] script`` names, the
folder pushed with the trainer, and the trainer flags that carry a task and its options to every
host.

The folder (``[run] code``, default the task file's folder) goes into the same content-addressed
tree as the trainer, under ``USER_CODE_DIR``, so a host receives it again only when something
in it changed, and every host imports the same bytes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from profiles.user_errors import UsageError
from remote.config.script_source import syntax_problem
from trainer.settings.flags import flag_words
from trainer.settings.run_settings import RunSettings
from trainer.settings.train_config import BUILTIN_TASKS, TrainConfig, split_task_spec, task_packages


class _WithRun(Protocol):
    """What ``needed_packages`` reads of a ``ClusterConfig``: its ``[run]``. A shape, not the
    class: ``cluster.py`` imports this module (to check a task's code), never the reverse."""

    @property
    def run(self) -> Any: ...


USER_CODE_DIR = "usercode"
"""The user's folder inside the pushed tree (``<workdir>/code/<digest>/usercode``)."""


@dataclass(frozen=True, kw_only=True)
class UserCode:
    """Where a user task or script lives on this machine and what the hosts are to run."""

    folder: Path
    """The folder pushed with the trainer (for a script: the folder it is launched from,
    which becomes each host's working directory of the run)."""
    task_file: str
    """The task file or script, relative to ``folder`` (POSIX)."""
    function: str | None
    """The function that builds the task; None for a script run as is."""

    @property
    def source(self) -> Path:
        """The user's own file on this machine (what errors name, never the pushed copy)."""
        return self.folder / self.task_file

    def in_tree(self, code_dir: str) -> str:
        """The file inside a host's pushed tree ``code_dir`` (unquoted)."""
        return f"{code_dir.rstrip('/')}/{USER_CODE_DIR}/{self.task_file}"

    def task_flag(self, code_dir: str) -> str:
        """``--task`` for a host whose pushed tree is ``code_dir`` (unquoted)."""
        return f"{self.in_tree(code_dir)}:{self.function}"


class CodeFileError(UsageError):
    """The task file or script a run names cannot be used: missing, not a file, outside its
    code folder, or not parsing. ``file`` is the user's own file, which the error is headed by."""

    def __init__(self, message: str, *, file: Path, key: str) -> None:
        super().__init__(message, title=f"{key} file {file.name} cannot be used")
        self.file = file


def _locate(task: str, code: str | None, base: Path, *, script: str | None = None) -> UserCode:
    """The user code of ``task`` (or ``script``)/``code`` relative to ``base`` (a
    ``CodeFileError`` for the file, a ``UsageError`` for the code folder)."""
    file: Path
    function: str | None
    if script is not None:
        file, function, key = Path(script), None, "script"
    else:
        (file, function), key = split_task_spec(task), "task"
    path = (base / file.expanduser()).resolve()
    if not path.exists():
        raise CodeFileError(f"{key} file {path} does not exist (a path in [run] {key} is "
                            "relative to the folder of cluster.toml)", file=path, key=key)
    if not path.is_file():
        raise CodeFileError(f"{key} file {path} is not a file; name the Python file itself",
                            file=path, key=key)
    folder = (base / Path(code).expanduser()).resolve() if code else path.parent
    if script is not None and not code and path.is_relative_to(base.resolve()):
        folder = base.resolve()  # the folder torchrun would start it from: where you launch
    if not folder.is_dir():
        raise UsageError(f"code folder {folder} does not exist")
    if not path.is_relative_to(folder):
        raise CodeFileError(f"{key} file {path} is not inside the code folder {folder}",
                            file=path, key=key)
    return UserCode(folder=folder, task_file=path.relative_to(folder).as_posix(),
                    function=function)


def script_argument(script: Path) -> Path:
    """``--script FILE`` (``corral run``, ``corral init``) as an absolute path: a path from the
    working directory, so a missing one is named as the option's, never as ``[run] script``'s
    (a path from cluster.toml's folder)."""
    path = script.expanduser().absolute()
    if not path.is_file():
        raise UsageError(f"--script {script}: {'not a file' if path.exists() else 'no such file'}"
                         f" ({path}); name your training script, a path from this folder",
                         title="bad --script")
    return path


@dataclass(frozen=True, kw_only=True)
class CodeProblem:
    """A ``[run] task``/``script``/``code`` that cannot be used."""

    where: str
    """The cluster.toml key (``[run] task``), or "" when the message names the file's line."""
    message: str
    file_error: CodeFileError | None = None
    """Set when the user's own file is at fault: alone, the error is headed by its name."""


def task_problems(run: Any, base: Path) -> list[CodeProblem]:
    """What is wrong with ``[run] task``/``script``/``code`` (nothing: an empty list)."""
    if run.script is not None:
        return script_problems(run, base)
    if isinstance(run.data, tuple):
        return [CodeProblem(where="[run] data", message=(
            "is for a script's data (its working directory); a task reads its data by path"))]
    if run.task in BUILTIN_TASKS:
        if run.code is not None:
            return [CodeProblem(where="[run] code", message=(
                f"is for a user task; task = {run.task!r} needs no code folder (leave code "
                "out)"))]
        return []
    try:
        _locate(run.task, run.code, base)
    except CodeFileError as exc:
        return [CodeProblem(where="[run] task", message=exc.message, file_error=exc)]
    except UsageError as exc:
        return [CodeProblem(where="[run] code", message=exc.message)]
    return []


def user_code(run: Any, base: Path) -> UserCode | None:
    """The run's user code (None for a built-in task); ``base`` is cluster.toml's folder."""
    if run.script is not None:
        return _locate(run.task, run.code, base, script=run.script)
    if run.task in BUILTIN_TASKS:
        return None
    return _locate(run.task, run.code, base)


def script_problems(run: Any, base: Path) -> list[CodeProblem]:
    """``[run] script`` problems: with a task, a missing file, one that does not parse."""
    if run.task != RunSettings.task:
        return [CodeProblem(where="[run] script", message=(
            f"runs your script instead of a task; leave out task = {run.task!r} (or leave out "
            "script)"))]
    try:
        code = _locate(run.task, run.code, base, script=run.script)
    except CodeFileError as exc:
        return [CodeProblem(where="[run] script", message=exc.message, file_error=exc)]
    except UsageError as exc:
        return [CodeProblem(where="[run] code", message=exc.message)]
    if (data := data_problem(run.data, code.folder, base)) is not None:
        return [CodeProblem(where="[run] data", message=data)]
    problem = syntax_problem(code.source)
    if problem is None:
        return []
    return [CodeProblem(where="", message=problem,
                        file_error=CodeFileError(problem, file=code.source, key="script"))]


def data_problem(data: bool | tuple[str, ...], folder: Path, base: Path) -> str | None:
    """What is wrong with ``[run] data``'s paths (None: nothing): one inside the launch folder
    must exist here (it is sent); one outside it is a path the hosts have, so it must be
    absolute (or start with ``~``): the ranks' working directory is new on every host."""
    for written in data if isinstance(data, tuple) else ():
        path = Path(os.path.abspath(base / Path(written).expanduser()))
        if not written.strip():
            return "an empty path; name a file or folder"
        if path.is_relative_to(folder.resolve()):
            if not os.path.lexists(path) or not path.exists():
                return (f"{written!r} ({path}) does not exist here, so it cannot be sent (a "
                        "path in [run] data is relative to the folder of cluster.toml)")
        elif not written.startswith(("/", "~")):
            return (f"{written!r} is outside the launch folder {folder}: give the absolute path "
                    "the hosts have it at (checked on every host before launch)")
    return None


def option_pairs(options: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The trainer's ``task_options`` (``--task-option KEY=VALUE``). The trainer reads VALUE
    as JSON when it parses, so anything but a plain string is sent as JSON, and a string only
    when it would not parse as something else (``"16"`` is sent as ``"\\"16\\""`` and
    arrives as a string)."""
    return tuple((key, value if isinstance(value, str) and not _parses(value)
                  else json.dumps(value)) for key, value in options.items())


def option_flags(options: Mapping[str, Any]) -> list[str]:
    """``--task-option KEY=VALUE`` words for ``options`` (see ``option_pairs``)."""
    return flag_words({"task_options": option_pairs(options)}, TrainConfig)


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def needed_packages(config: _WithRun) -> tuple[str, ...]:
    """Requirement strings (``"peft>=0.17,<1"``) the run's task needs on every host."""
    if config.run.script is not None:
        return ()  # a script's imports are probed by name (remote.checks.script_imports)
    return task_packages(config.run.task, config.run.task_options)
