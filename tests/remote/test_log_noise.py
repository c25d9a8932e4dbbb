"""Which output lines the front ends hide by default: real lines from corral's own runs (a
launcher log, a Hugging Face script's rank output), their rank prefix removed as the stream
removes it. Errors, tracebacks and what a rank prints itself are never hidden."""

from __future__ import annotations

import pytest

from remote.api import LogLine
from remote.log_noise import NOISE_FAMILIES, is_noise

TORCHRUN = "I1122 21:47:57.346000 27391 torch/distributed/"
HIDDEN = {
    "torch INFO": [
        f"{TORCHRUN}run.py:747] Using nproc_per_node=1.",
        f"{TORCHRUN}launcher/api.py:254]   rdzv_endpoint            : 127.0.0.1:30566",
        f"{TORCHRUN}launcher/api.py:254] ",
        f"{TORCHRUN}elastic/agent/server/api.py:553]   global_ranks=[1]",
        "I1122 21:48:12.266000 27391 torch/distributed/elastic/agent/server/api.py:1000] Done "
        "waiting for other agents. Elapsed: 0.40869998931884766 seconds",
        "[I1121 05:27:10.100000 20400 torch/distributed/distributed_c10d.py:1] Added key: x",
        "INFO:torch.distributed.distributed_c10d:Rank 1: Completed store-based barrier",
        "INFO:torch.distributed.elastic.agent.server.api:[default] Starting worker group",
        "[I1122 21:48:09.681658695 socket.cpp:811] [c10d] The client socket has connected",
        "[rank0]:[I1122 21:48:09.681658695 ProcessGroupNCCL.cpp:905] [PG 0 Rank 0] ProcessGroup",
    ],
    "torchrun warnings": [
        "W1122 21:40:23.656000 19790 torch/distributed/run.py:865] node_rank is only used for "
        "static rdzv_backend. It will be ignored for rdzv_backend=c10d.",
        "W1122 21:40:23.656000 19790 torch/distributed/run.py:874] ",
        "W1122 21:40:23.656000 19790 torch/distributed/run.py:874] "
        "*****************************************",
        "W1122 21:40:23.656000 19790 torch/distributed/run.py:874] Setting OMP_NUM_THREADS "
        "environment variable for each process to be 1 in default, to avoid your system being "
        "overloaded, please further tune the variable for optimal performance in your "
        "application as needed. ",
    ],
    "c10 warnings": [
        "[rank1]:[W1122 21:48:09.681658695 reducer.cpp:1529] Warning: find_unused_parameters="
        "True was specified in DDP constructor, but did not find any unused parameters in the "
        "forward pass. This flag results in an extra traversal of the autograd graph every "
        "iteration,  which can adversely affect performance.",
        "[W1122 21:42:28.904525803 socket.cpp:207] [c10d] The hostname of the client socket "
        "cannot be retrieved. err=-3",
    ],
    "library notices": [
        "Failed to load CPU gemm_4bit_forward from kernels-community: No module named "
        "'kernels'. Please make sure you already `pip install kernels` and the kernels >= "
        "0.11.1",
    ],
    "deprecations": [
        "/check/work/main/.venv/lib/python3.11/site-packages/transformers/training_args.py:"
        "1541: FutureWarning: `gradient_checkpointing` is deprecated and will be removed in "
        "v6. Use `activation_checkpointing` instead.",
        '  warnings.warn(f"`{old}` is deprecated and will be removed in v6. Use `{new}` '
        'instead.", FutureWarning)',
        "  warnings.warn(",
    ],
}

KEPT = [
    # what a rank prints itself
    "step 3/20 loss 2.1034 41.2 samples/s split 34,17,9",
    "{'train_runtime': '0.2501', 'train_samples_per_second': '107.9', 'epoch': '0.375'}",
    "Loading weights: 100%|██████████| 39/39 [00:00<00:00, 31187.39it/s]",
    "corral trainer: the trained result is in /root/.corral/runs/fake-1/final",
    # a script's own logging lines, at INFO level too: its progress (issue 36)
    "INFO:__main__:Rank 0 | Epoch 0 | Batch 10/31 | Loss: 2.3118",
    "INFO:root:epoch 1 done",
    "INFO:my_project.train:step 40 lr 3e-4",
    "I1122 21:47:57.346000 27391 /home/ada/train.py:88] step 40 loss 2.01",
    # errors and tracebacks, also inside torch's own log format and at its INFO level
    "Traceback (most recent call last):",
    '  File "/home/ada/task.py", line 12, in build',
    "RuntimeError: Gloo connectFullMesh failed",
    "E1122 21:49:47.508000 30170 torch/distributed/elastic/multiprocessing/tail_log.py:154] "
    "Traceback (most recent call last):",
    "E1121 05:27:11.100000 20394 elastic/multiprocessing/api.py:900] failed (exitcode: 1)",
    "I1122 21:49:49.171000 30170 torch/distributed/elastic/multiprocessing/errors/__init__.py:"
    "380] ('local_rank %s FAILED with no error file. Decorate your entrypoint fn with @record "
    "for traceback info. See: https://pytorch.org/docs/stable/elastic/errors.html', 1)",
    "[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/debug_logger.cc:9] ERROR failed "
    "to connect, willRetry=1, retry=1, retryLimit=3, rank=1, size=3",
    "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: ",
    # warnings that may matter: another torchrun warning, the user's own, another category
    "W1121 05:27:11.000000 20394 torch/distributed/elastic/multiprocessing/api.py:1028] "
    "Sending process 1 closing signal SIGTERM",
    "/home/ada/task.py:40: FutureWarning: my_loss is deprecated",
    "/check/work/main/.venv/lib/python3.11/site-packages/torch/utils/data/dataloader.py:665: "
    "UserWarning: This DataLoader will create 4 worker processes in total.",
    "[W1122 21:48:09.681658695 ProcessGroupGloo.cpp:727] Warning: Unable to resolve hostname "
    "to a (local) address. Using the loopback address as fallback.",
]


@pytest.mark.parametrize("family", sorted(HIDDEN))
def test_known_noise_is_hidden(family: str) -> None:
    shown = [line for line in HIDDEN[family] if not is_noise(line)]
    assert shown == []


def test_every_family_hides_one_of_the_real_lines() -> None:
    # a family that hides none of the lines it was written for is dead weight (or broken)
    lines = [line for family in HIDDEN.values() for line in family]
    for family in NOISE_FAMILIES:
        assert any(family.search(line) for line in lines), family.pattern


@pytest.mark.parametrize("line", KEPT)
def test_errors_tracebacks_and_rank_output_always_show(line: str) -> None:
    assert not is_noise(line)


def test_an_error_inside_a_noise_family_still_shows() -> None:
    # an INFO line or a library's deprecation warning that names an error is not routine
    assert not is_noise(f"{TORCHRUN}run.py:747] RuntimeError: store lost")
    assert not is_noise("/x/site-packages/lib/mod.py:3: FutureWarning: Exception raised")


def test_the_stream_record_carries_the_verdict() -> None:
    assert LogLine(t=0.0, host="h", rank=None, text=HIDDEN["torch INFO"][0]).noise
    assert not LogLine(t=0.0, host="h", rank=0, text=KEPT[0]).noise
