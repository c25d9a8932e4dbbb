"""LLM memory benchmark: peak resident memory of one corral rank (causal_lm) against a plain
transformers + peft (+ bitsandbytes) loop with the same recipe, for LoRA, LoRA + gradient
checkpointing and QLoRA (4-bit base) + checkpointing, and the time cost of checkpointing.

Peak RSS is the largest resident set of the process tree, read with ``getrusage`` by a
wrapper process around each run (on CPU; a GPU run would read
``torch.cuda.max_memory_allocated`` instead). The model is a generated Llama (no download)
larger than the test model so that weights and activations show. Runs alternate, round after
round, so LoRA with and without checkpointing are an interleaved A/B pair in every round.

Time per step: corral's from its ``step`` events (``step_s``), the plain loop's timed around
forward, backward and the optimizer; the first ``--skip`` steps of each run are warm-up. The
time cost of checkpointing is ``lora+ckpt / lora`` per round, median over the rounds.

    python bench/llm_memory.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._common import bare_env, markdown_table, read_run  # noqa: E402

RECIPES = {"lora": (), "lora+ckpt": ("gradient_checkpointing",),
           "qlora+ckpt": ("gradient_checkpointing", "load_in_4bit")}
PEAK_PY = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
           "subprocess.run(sys.argv[1:], check=True, capture_output=True); "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, "
           "time.perf_counter() - t)")


def measured(cmd: list[str], threads: int) -> tuple[float, float]:
    """Peak RSS (MiB) of ``cmd``'s process tree and its wall seconds."""
    out = subprocess.run([sys.executable, "-c", PEAK_PY, *cmd], cwd=REPO, env=bare_env(threads),
                         capture_output=True, text=True, check=True, timeout=1800).stdout
    rss, wall = out.split()
    return int(rss) / 2**20, float(wall)


def corral_cmd(args: argparse.Namespace, recipe: tuple[str, ...], run_dir: Path) -> list[str]:
    options = [f"model={args.model_dir}", f"data={args.data}", f"seq_len={args.seq_len}",
               "lora_r=16", "lora_alpha=32", "samples=0",
               *(f"{name}=true" for name in recipe)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1",
           "-m", "trainer", "--task", "causal_lm", "--optimizer", "adamw", "--lr", "0.001",
           "--global-batch", str(args.batch), "--steps", str(args.steps), "--threads",
           str(args.threads), "--resources-every", "0", "--checkpoint-every", "0",
           "--run-dir", str(run_dir)]
    for option in options:
        cmd += ["--task-option", option]
    return cmd


def plain_loop(args: argparse.Namespace) -> None:
    """The same recipe as a plain loop: packed sequences, mean token loss, AdamW."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    torch.set_num_threads(args.threads)
    recipe = RECIPES[args.plain]
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    ids = tokenizer(Path(args.data).read_text())["input_ids"]
    count = len(ids) // args.seq_len
    sequences = torch.tensor(ids[: count * args.seq_len]).view(count, args.seq_len)
    kwargs = {}
    if "load_in_4bit" in recipe:
        kwargs = {"device_map": {"": "cpu"}, "quantization_config": BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32)}
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32, **kwargs)
    checkpointing = {"use_reentrant": False}
    if "load_in_4bit" in recipe:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                                gradient_checkpointing_kwargs=checkpointing)
    elif "gradient_checkpointing" in recipe:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing)
    model.config.use_cache = False
    model.train()  # as transformers' Trainer does: in eval mode checkpointing is skipped
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32,
                                             target_modules=["q_proj", "v_proj"],
                                             task_type="CAUSAL_LM"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    step_s = []
    for step in range(args.steps):
        started = time.perf_counter()
        start = (step * args.batch) % (count - args.batch)
        batch = sequences[start: start + args.batch]
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step_s.append(time.perf_counter() - started)
    Path(args.times).write_text(json.dumps(step_s))


Runs = dict[tuple[str, str], list[tuple[float, float, float]]]
"""Per (recipe, "plain" or "corral"): each round's (peak RSS MiB, wall s, median step s)."""


def one_round(args: argparse.Namespace, folder: Path, round_: int, runs: Runs) -> None:
    """Every chosen recipe once, the plain loop then corral, appended to ``runs``."""
    for name in args.recipes.split(","):
        recipe = RECIPES[name]
        times = folder / f"plain-{round_}-{name}.json"
        plain = [sys.executable, str(Path(__file__).resolve()), "--plain", name,
                 "--model-dir", str(args.model_dir), "--data", str(args.data),
                 "--batch", str(args.batch), "--seq-len", str(args.seq_len),
                 "--steps", str(args.steps), "--threads", str(args.threads),
                 "--times", str(times)]
        rss, wall = measured(plain, args.threads)
        step_s = statistics.median(json.loads(times.read_text())[args.skip:])
        runs.setdefault((name, "plain"), []).append((rss, wall, step_s))
        run_dir = folder / f"run-{round_}-{name}"
        rss, wall = measured(corral_cmd(args, recipe, run_dir), args.threads)
        step_s = statistics.median(s.step_s for s in read_run(name, run_dir).steps
                                   if s.step > args.skip)
        runs.setdefault((name, "corral"), []).append((rss, wall, step_s))


def report(runs: Runs) -> str:
    """The memory and step-time table, and checkpointing's time cost per side."""
    rows = []
    for name in (n for n in RECIPES if (n, "plain") in runs):
        plain, corral = runs[(name, "plain")], runs[(name, "corral")]
        plain_rss = statistics.median(r for r, _, _ in plain)
        corral_rss = statistics.median(r for r, _, _ in corral)
        rows.append([name, f"{plain_rss:.0f}", f"{corral_rss:.0f}",
                     f"{corral_rss / plain_rss:.3f}",
                     f"{statistics.median(s for _, _, s in plain):.3f}",
                     f"{statistics.median(s for _, _, s in corral):.3f}"])
    lines = [markdown_table(["recipe", "plain peak RSS MiB", "corral peak RSS MiB", "ratio",
                             "plain s/step", "corral s/step"], rows), ""]
    paired = ("lora", "plain") in runs and ("lora+ckpt", "plain") in runs
    for side in ("plain", "corral") if paired else ():
        ratios = [with_[2] / without[2] for with_, without
                  in zip(runs[("lora+ckpt", side)], runs[("lora", side)], strict=True)]
        lines.append(f"checkpointing time cost ({side}): lora+ckpt / lora per round "
                     f"{', '.join(f'{r:.3f}' for r in ratios)}; median "
                     f"{statistics.median(ratios):.3f}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--skip", type=int, default=2, help="warm-up steps left out of the step time")
    p.add_argument("--recipes", default=",".join(RECIPES),
                   help=f"comma-separated, of {', '.join(RECIPES)} (the time cost of "
                        "checkpointing needs lora and lora+ckpt)")
    p.add_argument("--plain", choices=sorted(RECIPES), help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--times", help=argparse.SUPPRESS)
    args = p.parse_args()
    if unknown := set(args.recipes.split(",")) - set(RECIPES):
        p.error(f"--recipes: no recipe {', '.join(sorted(unknown))}")
    if args.plain:
        plain_loop(args)
        return
    from trainer.tiny_lm import TinyLMShape, write_corpus, write_tiny_lm

    runs: Runs = {}
    with tempfile.TemporaryDirectory(prefix="corral-bench-mem-") as name:
        folder = Path(name)
        args.model_dir, args.data = folder / "lm", folder / "corpus.txt"
        write_tiny_lm(args.model_dir, shape=TinyLMShape(hidden_size=512, intermediate_size=1408,
                                                        layers=8, heads=8))
        write_corpus(args.data, documents=400)
        for round_ in range(args.rounds):
            one_round(args, folder, round_, runs)
    print(report(runs))
    print(json.dumps({f"{k[0]}/{k[1]}": v for k, v in runs.items()}))


if __name__ == "__main__":
    main()
