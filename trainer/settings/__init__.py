"""The run's settings: the fields shared with cluster.toml (``run_settings``), the trainer's own
(``train_config``), the flags generated from them (``flags``, ``flag_types``) and the rules they
obey (``relations`` between fields, ``training_checks`` against the world and the device)."""
