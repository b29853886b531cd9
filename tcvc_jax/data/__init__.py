"""Training data: sources (DAVIS, Videvo, folders, videos), TFDS datasets, the grain pipeline, synthetic clips."""
