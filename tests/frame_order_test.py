"""One sort rule: an unpadded frame folder reads in the same (natural) order everywhere.

Before the media layer was merged, training (clip_io: natural sort) and eval.py / colorize
(video_io: plain name sort) read `1.png, 2.png, 10.png` as 1, 2, 10 and as 1, 10, 2.
"""

import numpy as np

from tcvc_jax.data import layout
from tcvc_jax.evaluation import clips as clips_lib
from tcvc_jax.media import reading
from tcvc_jax.media import writing


def test_unpadded_names_read_in_natural_order_by_every_reader(tmp_path):
  clip = tmp_path / "clip"
  clip.mkdir()
  names = ["1.png", "2.png", "10.png", "11.png", "3.png"]
  for n in names:
    value = int(n.split(".")[0])  # each frame's pixels hold its number
    (clip / n).write_bytes(writing.encode_png(np.full((8, 8, 3), value, np.uint8)))
  (clip / ".hidden.png").write_bytes(b"not a frame")
  (clip / "notes.txt").write_text("ignored")
  want = [1, 2, 3, 10, 11]
  assert reading.list_frame_files(str(clip)) == [f"{v}.png" for v in want]
  # eval.py and colorize read through FrameSource; training through data.layout.load_clip.
  streamed = reading.open_source(str(clip)).read_all(np.uint8, rgb=True)
  assert [int(f[0, 0, 0]) for f in streamed] == want
  frames, frame_names = layout.load_clip(layout.discover(str(tmp_path)).clips["clip"])
  assert [int(f[0, 0, 0]) for f in frames] == want and frame_names == [str(v) for v in want]
  np.testing.assert_array_equal(frames, streamed)
  # The evaluator's folder reader names its output frames in the same order.
  (eval_clip,) = clips_lib.iter_clips(_data_config(str(tmp_path)))
  assert [int(f[0, 0, 0]) for f in eval_clip.frames] == want


def _data_config(root):
  import ml_collections  # pylint: disable=g-import-not-at-top
  return ml_collections.ConfigDict(dict(source="folder", root=root, clips="", no_gt=False))
