"""The compressed outer exchange (``outer_compression = "int8" | "int4"``): plain torch ops on
any device, one torch.distributed all-gather between the island leaders.

- **Quantise.** An island's (sample-weighted) parameter change is cut into blocks of
  ``BLOCK`` values; each block keeps one float32 *step* (its largest magnitude over ``QMAX``)
  and each value the nearest whole number of steps in ``[-QMAX, QMAX]``: 8 bits a value, or 4
  bits packed two to a byte. Rounding to the nearest step leaves each value within half a
  step of the true one (``quantise`` / ``dequantise``).
- **Error feedback.** What quantisation left out of a round's change is kept per island and
  added to the next round's change before it is quantised (``ErrorFeedback``), so nothing is
  lost, only late: the sum of what an island sent converges to the sum of its true changes.
  The residual is checkpointed with the island's inner state (trainer/lowcomm/saving.py).
- **Exchange.** Each leader's codes and steps travel as one byte tensor through one
  ``all_gather`` (not an all-reduce: a sum of codes would overflow and mix scales), and every
  leader dequantises every island's payload and sums them **in island order**: the same
  float32 operations on every island, so the average is identical everywhere and
  deterministic (``gathered_sum``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainer.lowcomm.sizes import BLOCK


def qmax(bits: int) -> int:
    """The largest code magnitude of ``bits``-bit symmetric codes (127 for int8, 7 for int4)."""
    return 2 ** (bits - 1) - 1


@dataclass(frozen=True)
class Quantised:
    """One island's quantised change."""

    codes: torch.Tensor
    """uint8: one code + QMAX per value (int8), or two such codes per byte (int4, low nibble
    first), padded to whole blocks."""
    steps: torch.Tensor
    """float32, one per block: the value of one code unit (0 for an all-zero block)."""
    numel: int
    """Values of the change (the padding left out)."""
    bits: int


def quantise(values: torch.Tensor, bits: int, block: int = BLOCK) -> Quantised:
    """``values`` (a flat float32 tensor) to ``bits``-bit codes with one step per block."""
    top = qmax(bits)
    numel = values.numel()
    padded = torch.zeros(-(-numel // block) * block, dtype=torch.float32, device=values.device)
    padded[:numel] = values
    blocks = padded.view(-1, block)
    largest = blocks.abs().amax(dim=1)
    # A tensor divisor: CUDA divides by a number as a multiply by its reciprocal, a bit off
    # the CPU's quotient; tensor by tensor, both divide exactly, so every device sends the
    # same steps and codes.
    steps = largest / torch.full_like(largest, top)
    safe = torch.where(steps > 0, steps, torch.ones_like(steps))
    codes = (blocks / safe[:, None]).round().clamp_(-top, top).to(torch.int16) + top
    flat = codes.view(-1).to(torch.uint8)
    if bits == 4:
        pairs = flat.view(-1, 2)
        flat = pairs[:, 0] | (pairs[:, 1] << 4)
    return Quantised(codes=flat, steps=steps, numel=numel, bits=bits)


def dequantise(q: Quantised) -> torch.Tensor:
    """The float32 values ``q`` stands for (length ``q.numel``)."""
    top = qmax(q.bits)
    codes = q.codes
    if q.bits == 4:
        codes = torch.stack((codes & 0x0F, codes >> 4), dim=1).view(-1)
    blocks = (codes.to(torch.float32) - top).view(q.steps.numel(), -1)
    return (blocks * q.steps[:, None]).view(-1)[:q.numel]


class ErrorFeedback:
    """An island's residual: what quantisation left out, added to its next change."""

    def __init__(self, numel: int, device: torch.device) -> None:
        self.residual = torch.zeros(numel, dtype=torch.float32, device=device)

    def quantise(self, change: torch.Tensor, bits: int) -> Quantised:
        """``change`` plus the residual, quantised; the residual becomes what was left out."""
        wanted = change + self.residual
        sent = quantise(wanted, bits)
        self.residual = wanted - dequantise(sent)
        return sent


def payload_of(q: Quantised) -> torch.Tensor:
    """``q``'s codes and steps as one uint8 tensor (the all-gather's input)."""
    return torch.cat((q.codes, q.steps.contiguous().view(torch.uint8)))


def gathered_sum(payloads: list[torch.Tensor], numel: int, bits: int) -> torch.Tensor:
    """The sum of every island's dequantised change, added in island order (identical on
    every leader: the same inputs, the same float32 operations in the same order)."""
    blocks = -(-numel // BLOCK)
    code_bytes = blocks * BLOCK * bits // 8
    total = torch.zeros(numel, dtype=torch.float32, device=payloads[0].device)
    for payload in payloads:
        steps = payload[code_bytes:].view(torch.float32)
        total += dequantise(Quantised(codes=payload[:code_bytes], steps=steps, numel=numel,
                                      bits=bits))
    return total
