"""A script's own way to resume, recognised from its text (issue 80, item 5): the console's
``r`` offers it so that a relaunch resumes where the script's author resumes, not from
scratch. Each source below is a small stand-in of the shape public scripts have."""

from __future__ import annotations

from pathlib import Path

from remote.config.resume_idiom import resume_idiom, script_resume_idiom

INIT_FROM = """
init_from = 'scratch'  # 'scratch' or 'resume'
exec(open('configurator.py').read())
if init_from == 'resume':
    checkpoint = torch.load(os.path.join(out_dir, 'ckpt.pt'))
"""
HF_LAST = """
last = get_last_checkpoint(args.output_dir) if not args.overwrite_output_dir else None
trainer.train(resume_from_checkpoint=last or args.resume_from_checkpoint)
"""
HF_ARG = """
parser = HfArgumentParser((ScriptArguments, SFTConfig))
trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
"""
SWITCH = """
parser.add_argument("--resume", action="store_true", help="load the last snapshot")
"""


def test_init_from_resume_replaces_the_scripts_own_init_from() -> None:
    idiom = resume_idiom(INIT_FROM, ["config/small.py", "--init_from=gpt2", "--max_iters=50"])
    assert idiom is not None and idiom.name == "--init_from=resume"
    assert idiom.args == ("config/small.py", "--max_iters=50", "--init_from=resume")
    assert resume_idiom(INIT_FROM, ["--init_from", "scratch"]).args == (  # type: ignore[union-attr]
        "--init_from=resume",)


def test_hf_scripts_that_find_their_newest_checkpoint_drop_overwrite_output_dir() -> None:
    idiom = resume_idiom(HF_LAST, ["--output_dir", "out", "--overwrite_output_dir", "--bf16"])
    assert idiom is not None and "overwrite_output_dir" in idiom.note
    assert idiom.args == ("--output_dir", "out", "--bf16")


def test_a_resume_from_checkpoint_argument_gets_the_newest_checkpoint_when_known() -> None:
    assert resume_idiom(HF_ARG, ["--output_dir", "out"]) is None  # no folder to name
    idiom = resume_idiom(HF_ARG, ["--output_dir", "out", "--resume_from_checkpoint", "x"],
                         newest_checkpoint="out/checkpoint-40")
    assert idiom is not None
    assert idiom.args == ("--output_dir", "out", "--resume_from_checkpoint=out/checkpoint-40")


def test_a_resume_switch_is_added_once_and_a_plain_script_has_no_idiom(tmp_path: Path) -> None:
    assert resume_idiom(SWITCH, ["--epochs", "3", "--resume"]).args == (  # type: ignore[union-attr]
        "--epochs", "3", "--resume")
    assert resume_idiom("for step in range(10):\n    opt.step()\n", ["--lr", "1"]) is None
    (tmp_path / "train.py").write_text(INIT_FROM, encoding="utf-8")
    assert script_resume_idiom(tmp_path / "train.py", []) is not None
    assert script_resume_idiom(tmp_path / "gone.py", []) is None  # unreadable: nothing offered
