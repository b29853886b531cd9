"""Training: the jitted step and losses, the loop, checkpoints, sharding, metrics, validation.

Metrics go out through the metric writers.
"""
