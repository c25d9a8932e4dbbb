"""Supervised fine-tuning of a causal LM with LoRA using TRL's SFTTrainer: a torchrun script.

Runs as is under plain torchrun (the two marked lines do nothing there) and, under corral,
with corral's per-rank shares and events:

    python -m trainer.tiny_lm --out /tmp/tiny-lm          # a tiny local model, no download
    torchrun --nproc-per-node 3 examples/scripts/trl_sft.py \\
        --model /tmp/tiny-lm --data pairs.jsonl --out /tmp/sft-out

``--data`` is a JSON-lines file of ``{"prompt": ..., "completion": ...}`` objects (TRL's
prompt/completion format: the loss counts the completion only). The adapter is saved to
``OUT/final``; a restarted run resumes from the newest ``OUT/checkpoint-*``.
"""

from __future__ import annotations

import argparse
import gc
import os

import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
from transformers.trainer_utils import get_last_checkpoint
from trl import SFTConfig, SFTTrainer

from trainer.integrations.hf import corral  # corral opt-in, line 1 of 2


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a save_pretrained model directory")
    p.add_argument("--data", required=True, help="prompt/completion JSON lines")
    p.add_argument("--out", required=True, help="checkpoints and the final adapter")
    p.add_argument("--batch-size", type=int, default=4, help="per device, as in HF")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--optim", default="adamw_torch")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--cpu", action="store_true", help="train on the CPU even with a GPU")
    p.add_argument("--bf16", action="store_true",
                   help="bf16 autocast (TRL's default; fp32 gives the same result for any split)")
    args = p.parse_args()

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model)
    set_seed(args.seed)  # the adapter's random initialisation
    config = SFTConfig(
        output_dir=args.out, per_device_train_batch_size=args.batch_size, max_steps=args.steps,
        learning_rate=args.lr, optim=args.optim, lr_scheduler_type="constant", max_length=96,
        logging_steps=10, save_steps=50, report_to=[], seed=args.seed, use_cpu=args.cpu,
        bf16=args.bf16, disable_tqdm=True)
    trainer = SFTTrainer(
        model=model, args=config, processing_class=tokenizer,
        train_dataset=Dataset.from_json(args.data),
        peft_config=LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                               target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    trainer = corral(trainer)  # corral opt-in, line 2 of 2
    last = get_last_checkpoint(args.out) if os.path.isdir(args.out) else None
    trainer.train(resume_from_checkpoint=last)
    trainer.save_model(f"{args.out}/final")


def leave_process_group() -> None:
    """Leave torch's process group, as torch advises before a rank exits: a gloo group left
    to the interpreter's teardown can abort a rank that had finished (SIGABRT). Called once
    the trainer is gone: freed from inside the DDP wrapper's teardown, the group can hang."""
    gc.collect()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
    leave_process_group()
