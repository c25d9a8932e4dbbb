"""An island of one rank: its inner step through the island's flat copy of the gradients (as
before 2026-11-27) against the gradients left in place (trainer/lowcomm/steps.py's
``alone_in_island``), CPU seconds per step, the two interleaved.

One thread, the LM of ``--lm-shape`` (bench/lowcomm.py's; default 192,576,4: 2.0M
parameters), B=8 sequences of 64 random tokens, AdamW: the inner step of the shaped bench's
hosts. ``--blocks`` blocks of ``--steps`` steps each way, in turn (the order swapped every
other block); reported: the median over blocks of CPU ms per step each way and their ratio.
Process CPU time, not wall: a busy machine slows the wall clock of both ways alike but not
their CPU. Then the CPU of one round's int8 quantising and decoding (the compute thread's
share of a waited exchange).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.lowcomm_workloads import lm_shape
from trainer.lowcomm.compress import ErrorFeedback, gathered_sum, payload_of
from trainer.lowcomm.outer import flat_grads, unflatten_grads
from trainer.lowcomm.steps import alone_in_island
from trainer.tiny_lm import byte_tokenizer


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lm-shape", type=lm_shape, default=lm_shape("192,576,4"))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--blocks", type=int, default=6)
    args = p.parse_args()
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(1)
    torch.manual_seed(0)
    shape, vocab = args.lm_shape, len(byte_tokenizer())
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=vocab, hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size, num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads, num_key_value_heads=shape.heads,
        tie_word_embeddings=False))
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=0.002)
    tokens = torch.randint(0, vocab, (8, 64))

    def step(copy: bool) -> None:
        loss = model(input_ids=tokens, labels=tokens).loss * tokens.numel()
        loss.backward()
        if copy:
            units = unflatten_grads(parameters, flat_grads(parameters, float(tokens.numel())))
        else:
            units = alone_in_island(parameters, float(tokens.numel()))
        for q in parameters:
            assert q.grad is not None
            q.grad.div_(units)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):  # warm the allocator and the kernels
        step(True)
    ms: dict[str, list[float]] = {"flat copy": [], "in place": []}
    for block in range(args.blocks):
        ways = ["flat copy", "in place"] if block % 2 == 0 else ["in place", "flat copy"]
        for way in ways:
            started = time.process_time()
            for _ in range(args.steps):
                step(way == "flat copy")
            ms[way].append((time.process_time() - started) / args.steps * 1000)
    count = sum(q.numel() for q in parameters)
    copy, alone = (statistics.median(ms[w]) for w in ("flat copy", "in place"))
    print(f"{count:,} parameters, {args.blocks} blocks of {args.steps} steps each way")
    for way, values in ms.items():
        print(f"{way}: median {statistics.median(values):.1f} CPU ms/step "
              f"[{', '.join(f'{v:.1f}' for v in values)}]")
    print(f"in place / flat copy: {alone / copy:.3f} ({copy - alone:.1f} ms less per step)")
    print(f"a round's end, int8 with error feedback, 3 islands: {quantise_ms(count):.1f} CPU ms "
          f"(quantise this island's change, decode and sum the three payloads)")
    return 0


def quantise_ms(count: int, islands: int = 3, repeats: int = 5) -> float:
    """The compute thread's CPU for one round's int8 payloads (median over ``repeats``): what
    a waited exchange adds to the round besides the transfer."""
    feedback = ErrorFeedback(count, torch.device("cpu"))
    change = torch.randn(count) * 1e-3
    times = []
    for _ in range(repeats):
        started = time.process_time()
        payload = payload_of(feedback.quantise(change, 8))
        gathered_sum([payload] * islands, count, 8)
        times.append((time.process_time() - started) * 1000)
    return statistics.median(times)


if __name__ == "__main__":
    sys.exit(main())
