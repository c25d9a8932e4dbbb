"""The compressed, overlapped outer exchange on CUDA ranks (``--exchange local``): the same
codes as on the CPU, and a run that is deterministic and resumes mid-round exactly.

Three ranks on one GPU talk over gloo with CUDA tensors (NCCL refuses two ranks on one device),
so this runs on any CUDA machine; the islands' all-gather of codes then carries CUDA tensors.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from trainer_runs import check, cut_back_to, events, final_params, launch, max_rel_diff, of_kind

from trainer.lowcomm.compress import ErrorFeedback, dequantise, gathered_sum, payload_of

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

FLAGS = ("--exchange", "local", "--samples", "512", "--global-batch", "32", "--seed", "3",
         "--optimizer", "adamw", "--lr", "0.003", "--round-steps", "4", "--islands", "0,1,1",
         "--steps", "24", "--checkpoint-every", "8", "--device", "cuda", "--backend", "gloo",
         "--outer-compression", "int4", "--outer-overlap")
"""Islands 0 | 1 2 for three rounds, int4 with error feedback and the exchange overlapped, a
checkpoint at each round's end (tests/trainer/scenarios/test_lowcomm.py's run, on CUDA)."""


@pytest.mark.parametrize("bits", [8, 4])
def test_cuda_quantises_and_sums_to_the_cpus_codes_and_values(bits: int) -> None:
    torch.manual_seed(0)
    changes = [torch.randn(70_000) * scale for scale in (1e-3, 0.2, 5.0)]
    on_cpu = [ErrorFeedback(70_000, torch.device("cpu")) for _ in changes]
    on_gpu = [ErrorFeedback(70_000, torch.device("cuda")) for _ in changes]
    for _ in range(3):  # three rounds, so the residuals carried over are compared too
        cpu = [fb.quantise(c, bits) for fb, c in zip(on_cpu, changes, strict=True)]
        gpu = [fb.quantise(c.cuda(), bits) for fb, c in zip(on_gpu, changes, strict=True)]
        for a, b in zip(cpu, gpu, strict=True):
            assert torch.equal(a.codes, b.codes.cpu()) and torch.equal(a.steps, b.steps.cpu())
            assert torch.equal(dequantise(a), dequantise(b).cpu())
        total_cpu = gathered_sum([payload_of(q) for q in cpu], 70_000, bits)
        total_gpu = gathered_sum([payload_of(q) for q in gpu], 70_000, bits)
        assert total_gpu.device.type == "cuda"
        assert torch.equal(total_cpu, total_gpu.cpu())
    for a, b in zip(on_cpu, on_gpu, strict=True):
        assert torch.equal(a.residual, b.residual.cpu())


@pytest.mark.slow
def test_cuda_ranks_compressed_overlapped_rounds_repeat_and_resume_exactly(tmp_path: Path
                                                                          ) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    for run_dir in (first, second):
        check(launch(3, *FLAGS, "--run-dir", str(run_dir)))
    assert max_rel_diff(final_params(first), final_params(second)) == 0.0
    start = of_kind(events(first, 0), "start")[0]
    assert start["device"].startswith("cuda:")
    rounds = of_kind(events(first, 0), "round")
    assert [(r["compression"], r["overlap"]) for r in rounds] == [("int4", True)] * 3
    assert all(r["exchanged_bytes"] > 0 for r in rounds)
    # Cut back to the step-8 checkpoint (as if it had died mid-round after it) and resumed.
    cut_back_to(second, 8)
    check(launch(3, *FLAGS, "--resume", "--run-dir", str(second)))
    assert [s["step"] for s in of_kind(events(second, 0), "start")][-1] == 8
    assert max_rel_diff(final_params(first), final_params(second)) == 0.0
