"""LoRA fine-tuning of a causal LM with the Hugging Face Trainer: an ordinary torchrun script.

Runs as is under plain torchrun (the two marked lines do nothing there) and, under corral,
with corral's per-rank shares and events:

    python -m trainer.tiny_lm --out /tmp/tiny-lm          # a tiny local model, no download
    torchrun --nproc-per-node 3 examples/scripts/hf_trainer.py \\
        --model /tmp/tiny-lm --data pairs.jsonl --out /tmp/hf-out

``--data`` is a JSON-lines file of ``{"prompt": ..., "completion": ...}`` objects; the loss
counts the completion's tokens only. The adapter is saved to ``OUT/final``. A restarted run
(corral's ``max_restarts``) resumes from the newest ``OUT/checkpoint-*``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os

import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    Trainer,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint

from trainer.integrations.hf import corral  # corral opt-in, line 1 of 2


def tokenized(path: str, tokenizer, max_length: int) -> Dataset:
    """Prompt + completion as one sequence; only the completion's tokens are targets."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                pair = json.loads(line)
                prompt = tokenizer(pair["prompt"])["input_ids"]
                answer = tokenizer(pair["completion"] + tokenizer.eos_token)["input_ids"]
                ids = (prompt + answer)[:max_length]
                labels = ([-100] * len(prompt) + answer)[:max_length]
                rows.append({"input_ids": ids, "attention_mask": [1] * len(ids),
                             "labels": labels})
    return Dataset.from_list(rows)


def build_trainer(args: argparse.Namespace) -> Trainer:
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model)
    set_seed(args.seed)  # the adapter's random initialisation
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                             target_modules=["q_proj", "v_proj"],
                                             task_type="CAUSAL_LM"))
    training = TrainingArguments(
        output_dir=args.out, per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.accumulation, max_steps=args.steps,
        learning_rate=args.lr, optim=args.optim, lr_scheduler_type="constant",
        logging_steps=10, save_steps=args.save_steps, save_strategy="steps", report_to=[],
        seed=args.seed, use_cpu=args.cpu, disable_tqdm=True)
    return Trainer(model=model, args=training, train_dataset=tokenized(args.data, tokenizer, 96),
                   data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a save_pretrained model directory")
    p.add_argument("--data", required=True, help="prompt/completion JSON lines")
    p.add_argument("--out", required=True, help="checkpoints and the final adapter")
    p.add_argument("--batch-size", type=int, default=4, help="per device, as in HF")
    p.add_argument("--accumulation", type=int, default=1)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--optim", default="adamw_torch")
    p.add_argument("--save-steps", type=int, default=50)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--cpu", action="store_true", help="train on the CPU even with a GPU")
    args = p.parse_args()
    trainer = build_trainer(args)
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
