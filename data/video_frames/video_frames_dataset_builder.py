"""video_frames, for the `tfds build` CLI; the builder lives in tcvc_jax.data.datasets."""

from tcvc_jax.data.datasets import VideoFrames as Builder  # noqa: F401
