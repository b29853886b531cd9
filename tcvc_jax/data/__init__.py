"""Training data: sources, TFDS datasets, the grain pipeline, synthetic clips.

Sources: DAVIS, Videvo, folders, videos.
"""
