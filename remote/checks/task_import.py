"""The user's task file imported on each host the way its ranks will, before anything starts.

Once a host's code tree is pushed (by a launch's push phase, or within ``corral check``), its
interpreter imports the task file from that tree with the trainer's own loader
(``trainer.tasks.user.load_builder``) and looks up the build function; a syntax error, a
failing import (a package missing on that host), or a missing function is one ``task`` check
item naming the host and the user's own file and line (the pushed copy's path under
``~/.corral/code/<digest>/`` is mapped back). For ``causal_lm``, the ``data`` item says
whether each data file it names is readable there and every row in it is one the ranks accept
(the first bad one named by file and line).
"""

from __future__ import annotations

import contextlib
import shlex

from profiles.user_errors import CorralError
from remote.checks.host_facts import HostFacts
from remote.checks.preflight import AfterProbe
from remote.config.cluster import ClusterConfig
from remote.config.task_code import USER_CODE_DIR, UserCode
from remote.events import CheckItem
from remote.hosts.interpreter import last_json, python_c
from remote.hosts.push import CodeBundle, code_dir, push_code
from remote.hosts.transport import Transport, shell_path

TASK_IMPORT_PY = """
import json, os, sys
from pathlib import Path
tree, task_file, function = sys.argv[1:4]
sys.path.insert(0, tree)
answer = {"tree": os.path.abspath(tree), "real": os.path.realpath(tree)}
try:
    from trainer.tasks.user import load_builder
    load_builder(Path(tree, task_file), function)
except Exception as exc:
    answer["error"] = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
print(json.dumps(answer))
"""
TASK_IMPORT_TIMEOUT_S = 120.0
"""An import may load a framework (transformers takes seconds on a cold disk)."""

Pushed = dict[str, bool | CorralError]
"""Per host: whether its push sent the tree (False: it was there), or why it failed."""


async def task_item(transport: Transport, user: UserCode, digest: str) -> CheckItem | None:
    """The host's ``task`` item; None when its interpreter gave no answer (the ``python``
    item says why)."""
    if user.function is None:  # a script: remote.checks.script_imports checks its imports
        return None
    host = transport.host
    tree = f"{code_dir(host.workdir, digest)}/{USER_CODE_DIR}"
    command = (f"{python_c(host, TASK_IMPORT_PY)} {shell_path(tree)} "
               f"{shlex.quote(user.task_file)} {shlex.quote(user.function)}")
    try:
        done = await transport.run(command, timeout=TASK_IMPORT_TIMEOUT_S)
    except CorralError:
        return None
    answer = last_json(done.stdout)
    if answer is None:
        return None
    error = str(answer.get("error", ""))
    for pushed in (str(answer["real"]), str(answer["tree"])):  # the user's folder, not the copy
        error = error.replace(pushed, str(user.folder))
    local = user.folder / user.task_file
    if not error:
        return CheckItem(host=host.name, name="task", ok=True,
                         detail=f"{user.task_file}:{user.function} imports")
    hint = (f"install the missing package on {host.name} (or change {local})"
            if "ModuleNotFoundError" in error else f"fix {local}")
    return CheckItem(host=host.name, name="task", ok=False, detail=error, hint=hint)


def data_files(config: ClusterConfig) -> list[tuple[str, str]]:
    """``(key, path)`` of every data file a ``causal_lm`` run reads on each host."""
    if config.run.task != "causal_lm":
        return []
    options = dict(config.run.task_options)
    found = [(f"[run] task_options.{key}", str(options[key]))
             for key in ("data", "eval_data") if options.get(key)]
    if config.run.eval_data:
        found.append(("[run] eval_data", config.run.eval_data))
    return found


DATA_ROWS_PY = """
import json, os, sys
from pathlib import Path
tree, args = sys.argv[1], sys.argv[2:]
sys.path.insert(0, tree)
answer = {}
try:
    from trainer.tasks.lm_data import read_examples
    for key, path in zip(args[::2], args[1::2]):
        where = Path(path).expanduser()
        if not (where.is_file() and os.access(where, os.R_OK)):
            answer = {"key": key, "missing": True}
            break
        try:
            read_examples(where)
        except Exception as exc:
            answer = {"key": key, "error": getattr(exc, "message", None) or str(exc)}
            break
except ImportError:
    answer = {"import_failed": True}
print(json.dumps(answer))
"""
DATA_ROWS_TIMEOUT_S = 600.0
"""Every row of every file is read and checked, as each rank will (a large file takes time)."""


async def data_item(transport: Transport, files: list[tuple[str, str]], digest: str
                    ) -> CheckItem | None:
    """The host's ``data`` item: every file readable there and every row of it one the ranks
    accept, judged by the trainer's own reader from the pushed tree, as the ranks will open it
    (from the run directory: a relative path cannot be checked before it exists, so it is
    refused). None when the interpreter gave no answer (the ``python`` or ``packages`` item
    says why)."""
    host = transport.host
    relative = [(k, p) for k, p in files if not p.startswith(("/", "~"))]
    if relative:
        key, path = relative[0]
        return CheckItem(host=host.name, name="data", ok=False,
                         detail=f"{key} = {path!r} is relative: the ranks open it from their "
                                "run directory", hint=f"give {key} as an absolute path")
    tree = code_dir(host.workdir, digest)
    command = (f"{python_c(host, DATA_ROWS_PY)} {shell_path(tree)} "
               + " ".join(shlex.quote(word) for pair in files for word in pair))
    answer = last_json((await transport.run(command, timeout=DATA_ROWS_TIMEOUT_S)).stdout)
    if answer is None or answer.get("import_failed"):
        return None
    if "key" not in answer:
        return CheckItem(host=host.name, name="data", ok=True,
                         detail=", ".join(p for _, p in files) + " readable, every row valid")
    key = str(answer["key"])
    path = dict(files)[key]
    if answer.get("missing"):
        return CheckItem(host=host.name, name="data", ok=False,
                         detail=f"{key} = {path!r}: no such readable file on {host.name}",
                         hint=f"copy the file to {path} on {host.name}, or change {key}")
    return CheckItem(host=host.name, name="data", ok=False,
                     detail=f"{key}: {answer['error']}",
                     hint=f"fix {path} on {host.name} (the ranks would stop at it)")


async def push_and_check_code(transport: Transport, config: ClusterConfig, code: CodeBundle,
                              present: bool | None, user: UserCode | None,
                              ) -> tuple[bool | CorralError, list[CheckItem]]:
    """Push the code tree to the host (``present``: the probe found it there already), then
    judge what needs it there: the data files, read with the pushed trainer's reader, and a
    user task, imported. Whether the tree was sent (or why the push failed), and the items."""
    try:
        sent: bool | CorralError = await push_code(transport, code, present=present)
    except CorralError as exc:
        return exc, []
    items: list[CheckItem] = []
    if files := data_files(config):
        with contextlib.suppress(CorralError):
            if (data := await data_item(transport, files, code.digest)) is not None:
                items.append(data)
    if user is not None and (task := await task_item(transport, user, code.digest)) is not None:
        items.append(task)
    return sent, items


def push_then_import(config: ClusterConfig, code: CodeBundle, pushed: Pushed,
                     user: UserCode | None) -> AfterProbe:
    """The check's ``after_probe`` (``corral check``): ``push_and_check_code`` as soon as the
    host's probe is done, its items added to the host's (the push recorded in ``pushed``;
    ``user``: the run's user code, located once for the check)."""

    async def after_probe(transport: Transport, found: HostFacts) -> None:
        # A push before the whole check has passed is harmless: the tree is content-addressed
        # and renamed into place only when complete.
        sent, items = await push_and_check_code(transport, config, code, found.code_present,
                                                user)
        pushed[transport.host.name] = sent
        found.items.extend(items)

    return after_probe
