"""Training: distributed set-up, optimisers and schedules, the loop, checkpoints."""
