"""A script run's script, folder and arguments kept in its record, so that ``corral run
--resume RUN`` without ``--script`` runs the same script again (issue 80, item 5)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from profiles.user_errors import UsageError
from remote.config.cluster import ClusterConfig
from remote.config.resume_idiom import ResumeIdiom, script_resume_idiom
from remote.records.runs import RunInfo, list_runs, read_run_info, resolve_run_id


def script_words(config: ClusterConfig) -> list[str] | None:
    """``[script, code folder, launch_dir, *args]`` of a script run (``RunInfo.script``);
    None for a task run."""
    run = config.run
    if run.script is None:
        return None
    base = config.path.parent  # [run] script and code are from cluster.toml's folder
    return [str(base / run.script), str(base / run.code) if run.code else "",
            config.launch_dir or "", *run.args]


def with_recorded_script(config: ClusterConfig, named: str | None) -> ClusterConfig:
    """``config`` running the script the resumed run ran (``named``, else the newest run with
    a recorded script), with its arguments, folder and launch directory; ``config`` as is
    when it names a script itself or no such run is recorded."""
    if config.run.script is not None:
        return config
    if named is not None:
        if not named.strip():
            raise UsageError("--resume \"\" names no run: give a run id or name (corral status "
                             "lists them), or --resume alone for the newest",
                             title="bad --resume")
        words = read_run_info(config, resolve_run_id(config, named)).script
    else:
        words = next((info.script for info in list_runs(config) if info.script), None)
    if not words:
        return config
    script, code, launch, *args = words
    return replace(config, run=replace(config.run, script=script, args=tuple(args),
                                       code=code or None), launch_dir=launch)


def with_args(config: ClusterConfig, args: Sequence[str]) -> ClusterConfig:
    """``config`` running its script with ``args`` (one string each) in place of its own
    (``UsageError`` when it runs no script: a task takes no script arguments)."""
    if config.run.script is None:
        raise UsageError("script arguments were given for a run of corral's own loop, which "
                         "takes none: give them to a script run", title="bad arguments")
    return replace(config, run=replace(config.run, args=tuple(str(a) for a in args)))


@dataclass(frozen=True)
class ScriptResume:
    """What a relaunch of a script run would run: its ``script`` (a path on this machine), the
    ``args`` the attempt before ran with, and the script's resume ``idiom`` when recognised."""

    script: str
    args: tuple[str, ...]
    idiom: ResumeIdiom | None


def resume_offer(config: ClusterConfig, info: RunInfo | None, *,
                 newest_checkpoint: str | None = None) -> ScriptResume | None:
    """The script run ``info`` ran, from its record (else ``config``'s ``[run] script``), with
    its arguments and resume idiom; None for a run of corral's own loop."""
    if info is not None and info.script:
        script, _, _, *args = info.script
    elif config.run.script is not None:
        script, args = str(config.path.parent / config.run.script), list(config.run.args)
    else:
        return None
    return ScriptResume(script, tuple(args), script_resume_idiom(
        script, args, newest_checkpoint=newest_checkpoint))
