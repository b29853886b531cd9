"""Training: the jitted step and losses, the loop, checkpoints, sharding, metric writers, validation."""
