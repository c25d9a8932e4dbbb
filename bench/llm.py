"""LLM benchmark: corral's causal_lm task on 2 CPU ranks against a plain single-process
transformers + peft loop, on the same model, data, LoRA settings and global batch.

At equal work: each corral rank trains its half of the global batch (``B/2`` sequences) per
step, and the plain loop trains ``B/2`` sequences per step in one process with the same thread
count; per-rank tokens/s of corral is compared with the plain loop's tokens/s (target >= 0.95).
The two alternate, round after round. Each round's time per step is the median over the steps
after ``--skip`` (corral: rank 0's ``step_s``; plain: its own clock). Where corral's time goes is
reported too: the slowest rank's forward+backward (``compute_s``) and the rest of the step (the
gradient all-reduce, the tally all-gather, the optimizer, events), a cost per step that does not
grow with the sequence length, so ``--seq-len`` decides how much of the step it is.

    python bench/llm.py --rounds 5                 # 512-token sequences
    python bench/llm.py --rounds 5 --seq-len 128   # short steps: the fixed cost shows most
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

from bench._common import (  # noqa: E402
    bare_env,
    causal_lm_task,
    rounds_parser,
    tiny_lm_files,
    trainer_flags,
)


def corral_step_s(args: argparse.Namespace, task: list[str]) -> tuple[float, float]:
    """Median step seconds of ``python -m trainer`` with ``task`` flags (``causal_lm_task``) on
    ``args.nproc`` ranks, and the median of the slowest rank's compute seconds in each step."""
    with tempfile.TemporaryDirectory(prefix="corral-bench-llm-") as run_dir:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={args.nproc}",
               *trainer_flags(global_batch=args.global_batch, steps=args.steps,
                              run_dir=Path(run_dir), threads=args.threads, task=task)]
        subprocess.run(cmd, cwd=REPO, env=bare_env(args.threads), capture_output=True, text=True,
                       check=True, timeout=900)
        ranks = [[e for e in map(json.loads, (Path(run_dir) / "metrics" / f"rank-{r}.jsonl")
                                       .read_text().splitlines()) if e["event"] == "step"]
                 for r in range(args.nproc)]
    slowest = [max(e["compute_s"] for e in step) for step in zip(*ranks, strict=True)]
    return (statistics.median(e["step_s"] for e in ranks[0][args.skip:]),
            statistics.median(slowest[args.skip:]))


def plain_step_s(args: argparse.Namespace, model: Path, data: Path) -> float:
    """Median step seconds of the plain loop (a subprocess, like the corral ranks)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--plain", "--model-dir", str(model),
           "--data", str(data), "--batch", str(args.global_batch // args.nproc),
           "--seq-len", str(args.seq_len), "--lora-r", str(args.lora_r),
           "--steps", str(args.steps), "--skip", str(args.skip), "--threads", str(args.threads)]
    out = subprocess.run(cmd, cwd=REPO, env=bare_env(args.threads), capture_output=True, text=True,
                         check=True, timeout=900).stdout
    return float(json.loads(out.strip().splitlines()[-1])["step_s"])


def plain_loop(args: argparse.Namespace) -> None:
    """A plain transformers + peft training loop: packed sequences, mean token loss, AdamW."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    text = Path(args.data).read_text()
    ids = tokenizer(text)["input_ids"]
    count = len(ids) // args.seq_len
    sequences = torch.tensor(ids[: count * args.seq_len]).view(count, args.seq_len)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir)
    model = get_peft_model(model, LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r,
                                             target_modules=["q_proj", "v_proj"],
                                             task_type="CAUSAL_LM"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    times = []
    for step in range(args.steps):
        t0 = time.perf_counter()
        start = (step * args.batch) % (count - args.batch)
        batch = sequences[start : start + args.batch]
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    print(json.dumps({"step_s": statistics.median(times[args.skip:])}))


def main() -> None:
    args = _parser().parse_args()
    if args.plain:
        plain_loop(args)
        return
    tokens, plain, corral, compute = run_rounds(args)
    report(args, tokens, plain, corral, compute)


def _parser() -> argparse.ArgumentParser:
    """The command line's flags; the hidden ones start the plain loop's subprocess."""
    p = rounds_parser(__doc__)
    p.add_argument("--global-batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--skip", type=int, default=10)
    p.add_argument("--json", type=Path, help="also write the result here")
    p.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    return p


def run_rounds(args: argparse.Namespace) -> tuple[int, list[float], list[float], list[float]]:
    """The tokens per rank per step, and each round's step seconds of the plain loop and of
    corral, and corral's slowest compute seconds; a line per round as it ends."""
    with tempfile.TemporaryDirectory(prefix="corral-bench-lm-") as folder:
        task = causal_lm_task(Path(folder), seq_len=args.seq_len, lora_r=args.lora_r)
        model, data = tiny_lm_files(Path(folder))
        tokens = (args.global_batch // args.nproc) * args.seq_len  # per rank per step
        plain: list[float] = []
        corral: list[float] = []
        compute: list[float] = []
        for i in range(args.rounds):
            # Alternate which goes first so a drifting machine favours neither.
            if i % 2 == 0:
                plain.append(plain_step_s(args, model, data))
            step_s, compute_s = corral_step_s(args, task)
            corral.append(step_s)
            compute.append(compute_s)
            if i % 2 == 1:
                plain.append(plain_step_s(args, model, data))
            print(f"round {i + 1}: plain {tokens / plain[-1]:.0f} tokens/s, corral per rank "
                  f"{tokens / corral[-1]:.0f} tokens/s (ratio {plain[-1] / corral[-1]:.3f}); "
                  f"corral step {1000 * step_s:.1f} ms = slowest compute {1000 * compute_s:.1f}"
                  f" + rest {1000 * (step_s - compute_s):.1f}", flush=True)
    return tokens, plain, corral, compute


def report(args: argparse.Namespace, tokens: int, plain: list[float], corral: list[float],
           compute: list[float]) -> None:
    """The medians on one line against the target; the result also to ``--json``."""
    ratios = [a / b for a, b in zip(plain, corral, strict=True)]
    result = {
        "benchmark": "llm", "nproc": args.nproc, "threads": args.threads,
        "global_batch": args.global_batch, "seq_len": args.seq_len, "lora_r": args.lora_r,
        "steps_measured": args.steps - args.skip, "rounds": args.rounds,
        "plain_tokens_per_s": [tokens / s for s in plain],
        "corral_tokens_per_s_per_rank": [tokens / s for s in corral],
        "ratio_of_medians": statistics.median(plain) / statistics.median(corral),
        "plain_step_ms": [1000 * s for s in plain], "corral_step_ms": [1000 * s for s in corral],
        "corral_slowest_compute_ms": [1000 * s for s in compute],
        "round_ratios": ratios, "target": 0.95,
    }
    print(f"median plain {tokens / statistics.median(plain):.0f} tokens/s, corral per rank "
          f"{tokens / statistics.median(corral):.0f} tokens/s "
          f"(cluster {args.nproc * tokens / statistics.median(corral):.0f}): ratio "
          f"{result['ratio_of_medians']:.3f} (target >= 0.95); round ratios "
          f"{min(ratios):.3f}..{max(ratios):.3f}; corral step "
          f"{1000 * statistics.median(corral):.1f} ms = slowest compute "
          f"{1000 * statistics.median(compute):.1f} + rest "
          f"{1000 * (statistics.median(corral) - statistics.median(compute)):.1f}; plain step "
          f"{1000 * statistics.median(plain):.1f} ms")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
