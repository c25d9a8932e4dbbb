"""A user's Hugging Face Trainer script with corral's two-line opt-in, as small as it gets: a tiny
Llama built from a config (no download) on a dataset of token ids (no tokenizer), SGD with
momentum and a linear schedule (so the optimizer's and the scheduler's state must travel to a
joiner), two accumulation rounds a step. ``--pause`` stands for a real step's compute (seconds
a step), so that hosts can leave and join while it trains
(tests/trainer/scenarios/test_hf_live.py)."""

import argparse
import faulthandler
import signal
import time

import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from trainer.integrations.hf import corral


class Tokens(torch.utils.data.Dataset):
    """Sequences of token ids; some targets masked (-100), so ranks' token counts differ."""

    def __init__(self, count: int, length: int, vocab: int) -> None:
        g = torch.Generator().manual_seed(1)
        self.ids = torch.randint(0, vocab, (count, length), generator=g)
        self.labels = self.ids.clone()
        self.labels[torch.rand(count, length, generator=g) < 0.3] = -100

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


class Pause(TrainerCallback):
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(self.seconds)


def main() -> None:
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # a hung test's stacks
    p = argparse.ArgumentParser()
    p.add_argument("--batch-size", type=int, default=2, help="per device")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--pause", type=float, default=0.0)
    args = p.parse_args()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=48, hidden_size=16, intermediate_size=32,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=32)
    model = LlamaForCausalLM(config)
    training = TrainingArguments(
        output_dir="out", per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=2, num_train_epochs=args.epochs, optim="sgd",
        learning_rate=0.3, lr_scheduler_type="linear", save_strategy="no", logging_steps=10,
        optim_args="momentum=0.9", report_to=[], use_cpu=True, disable_tqdm=True, seed=0)
    trainer = Trainer(model=model, args=training, train_dataset=Tokens(96, 12, 48),
                      callbacks=[Pause(args.pause)])
    trainer = corral(trainer)
    trainer.train()
    if trainer.is_world_process_zero():
        torch.save(trainer.model.state_dict(), "model.pt")


if __name__ == "__main__":
    main()
