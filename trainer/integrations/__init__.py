"""corral for the user's own training script: the Hugging Face Trainer / TRL opt-in (``hf``),
the plain-DDP helper (``ddp``) and the environment corral's launch passes to the script
(``contract``). Nothing here is imported by corral's own trainer loop."""
