"""Exact resume: the checkpoint files (``files``: atomic, hashed, rank 0 only) and when and
what to write and how to resume (``checkpointer``, from the run's state ``RunProgress``,
trainer/step/step_records.py)."""
