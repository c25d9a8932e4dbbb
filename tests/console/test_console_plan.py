"""The console's check key shows the launch plan ``corral run --dry-run`` prints."""

from __future__ import annotations

from console_helpers import check_report_text, make_app

from remote.api import CheckItem, CheckReport, LaunchPreview, PlannedHost
from tests.fake_runs import FakeController


async def test_check_shows_the_launch_plan_below_the_report() -> None:
    plan = LaunchPreview(run_id="demo-1", backend="gloo", world_size=3,
                         rendezvous="10.0.0.1:29400", hosts=(
        PlannedHost(host="gpubox", ranks=(0, 1), device="cuda", gpus=2, visible_devices="0,1",
                    interface="eth0", precision="bf16", shares=(40, 40),
                    command="torchrun-on-gpubox"),
        PlannedHost(host="laptop", ranks=(2,), device="cpu", gpus=0, visible_devices=None,
                    interface="wlan0", precision="fp32", shares=(16,),
                    command="torchrun-on-laptop")))
    report = CheckReport(items=(CheckItem(host="gpubox", name="torch", ok=True, detail="ok"),),
                         plan=plan)
    app = make_app(FakeController(check_report=report))
    async with app.run_test(size=(160, 48)) as pilot:
        text = await check_report_text(pilot, "c")
    assert "backend gloo, 3 rank(s), rendezvous 10.0.0.1:29400" in text
    assert "cuda × 2, CUDA_VISIBLE_DEVICES=0,1" in text and "40,40" in text
    assert "bf16" in text and "fp32" in text  # each host's precision
    assert "torchrun-on-laptop" in text
