"""The console's ``r`` on a script run (issue 80, item 5): a dialog shows the arguments the
run ran with, editable, with the script's resume idiom (``--init_from=resume``) put in; the
relaunch asks the remote layer to resume that run with the arguments as edited."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Input

from console.widgets.script_args import ScriptArgsScreen
from remote.config.cluster import ClusterConfig, ClusterSection, HostSection, RunSection
from tests.console.console_helpers import make_app, wait_for
from tests.fake_runs import FakeController

NANOGPT_SHAPED = """init_from = 'scratch'
exec(open('configurator.py').read())
if init_from == 'resume':
    state = torch.load('out/ckpt.pt')
"""


def _config(tmp_path: Path, controller: FakeController) -> ClusterConfig:
    (tmp_path / "train.py").write_text(NANOGPT_SHAPED, encoding="utf-8")
    hosts = tuple(HostSection(name=h.name, address="local") for h in controller.hosts)
    return ClusterConfig(path=tmp_path / "cluster.toml",
                         cluster=ClusterSection(name="lab", master=hosts[0].name,
                                                run_root=str(tmp_path / "runs")),
                         hosts=hosts, run=RunSection(script="train.py", args=(
                             "config/small.py", "--max_iters=50")))


async def test_r_on_a_script_run_edits_its_arguments_with_the_resume_idiom(
        tmp_path: Path) -> None:
    controller = FakeController(script_options={"hold_at": 12})
    app = make_app(controller, config=_config(tmp_path, controller))
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: app.session.model.step == 11)
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, ScriptArgsScreen))
        field = app.screen.query_one("#args", Input)
        assert field.value == "config/small.py --max_iters=50 --init_from=resume"
        await pilot.click("#as-before")
        assert field.value == "config/small.py --max_iters=50"  # as the attempt before ran
        await pilot.click("#offered")
        field.value += " --out_dir='my out'"
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(controller.runs) == 2)
    assert controller.runs[0].stop_calls == 1  # the live run stopped first
    assert controller.calls[-1] == ("start", {
        "resume": controller.runs[0].run_id, "policy": "dynamic",
        "script_args": ("config/small.py", "--max_iters=50", "--init_from=resume",
                        "--out_dir=my out")})


async def test_unbalanced_quotes_are_named_and_escape_relaunches_nothing(
        tmp_path: Path) -> None:
    controller = FakeController(script_options={"hold_at": 12})
    app = make_app(controller, config=_config(tmp_path, controller))
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: app.session.model.step == 11)
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, ScriptArgsScreen))
        app.screen.query_one("#args", Input).value = "--out_dir='open"
        await pilot.press("enter")
        assert isinstance(app.screen, ScriptArgsScreen)  # still open, the problem said
        assert "quotation" in str(app.screen.query_one("#problem").render())
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, ScriptArgsScreen))
    assert [c for c, _ in controller.calls].count("start") == 1 and len(controller.runs) == 1
