"""Live membership: hosts join and leave a running run at step boundaries (docs/reliability.md)."""
