"""Exact resume: the checkpoint files (``files``: atomic, hashed, rank 0 only) and when and
what to write and how to resume (``checkpointer``, with the run's state ``RunProgress``)."""
