"""tcvc_jax.atomic: outputs appear whole or not at all, and an old output is never lost."""

import os
import pathlib
import shutil
import socket
import subprocess
import sys

import pytest

from tcvc_jax import atomic


def _names(folder):
  return sorted(os.listdir(folder))


def test_a_file_appears_only_on_commit(tmp_path):
  path = tmp_path / "a.bin"
  with atomic.AtomicOutput(path) as out:
    with open(out.tmp, "wb") as f:
      f.write(b"data")
    assert not path.exists()
  assert path.read_bytes() == b"data" and _names(tmp_path) == ["a.bin"]


def test_an_error_leaves_nothing_and_keeps_the_old_output(tmp_path):
  path = tmp_path / "a.bin"
  path.write_bytes(b"old")
  with pytest.raises(RuntimeError):
    with atomic.AtomicOutput(path, overwrite=True) as out:
      with open(out.tmp, "wb") as f:
        f.write(b"half")
      raise RuntimeError("stopped")
  assert path.read_bytes() == b"old" and _names(tmp_path) == ["a.bin"]


def test_an_existing_output_needs_overwrite(tmp_path):
  (tmp_path / "a.bin").write_bytes(b"old")
  with pytest.raises(atomic.OutputExistsError, match="--overwrite"):
    atomic.write_bytes(tmp_path / "a.bin", b"new")
  assert (tmp_path / "a.bin").read_bytes() == b"old" and _names(tmp_path) == ["a.bin"]


def test_a_folder_is_swapped_whole(tmp_path):
  path = tmp_path / "out"
  path.mkdir()
  (path / "old.txt").write_text("old")
  with atomic.AtomicOutput(path, directory=True, overwrite=True) as out:
    with open(os.path.join(out.tmp, "new.txt"), "w") as f:
      f.write("new")
  assert _names(path) == ["new.txt"] and _names(tmp_path) == ["out"]


def test_a_failed_folder_swap_puts_the_old_folder_back(tmp_path):
  path = tmp_path / "out"
  path.mkdir()
  (path / "old.txt").write_text("old")
  out = atomic.AtomicOutput(path, directory=True, overwrite=True)
  shutil.rmtree(out.tmp)  # the new folder is gone: its move into place fails
  with pytest.raises(FileNotFoundError):
    out.commit()
  assert _names(path) == ["old.txt"] and _names(tmp_path) == ["out"]


def test_watched_outputs_are_reported_once_in_place(tmp_path):
  final, other = tmp_path / "final.bin", tmp_path / "other.bin"
  atomic.watch(final)
  out = atomic.AtomicOutput(final)
  assert not atomic.was_committed(final)
  atomic.write_bytes(other, b"x")
  assert not atomic.was_committed(other)  # not watched
  with atomic.commits_held():  # the lock is re-entrant for the thread that holds it
    out.commit()
  assert atomic.was_committed(final) and atomic.was_committed(str(final))


def test_discard_all_removes_every_unfinished_output(tmp_path):
  a = atomic.AtomicOutput(tmp_path / "a.bin")
  b = atomic.AtomicOutput(tmp_path / "b", directory=True)
  assert len(_names(tmp_path)) == 2
  atomic.discard_all()
  assert not _names(tmp_path)
  a.commit()  # a discarded output is not put in place afterwards
  b.commit()
  assert not _names(tmp_path)


def test_a_new_folder_is_undone_unless_kept(tmp_path):
  new = atomic.NewFolder(tmp_path / "a" / "b" / "run")
  (tmp_path / "a" / "b" / "run" / "x").write_text("1")
  new.discard()
  assert os.listdir(tmp_path) == []  # the parents it made go too
  kept = atomic.NewFolder(tmp_path / "run")
  (tmp_path / "run" / "x").write_text("1")
  kept.keep()
  kept.discard()
  assert os.listdir(tmp_path / "run") == ["x"]
  empty = tmp_path / "empty"
  empty.mkdir()
  atomic.NewFolder(empty)
  (empty / "y").write_text("1")
  atomic.discard_all()  # as an interrupt does
  assert os.listdir(empty) == []
  full = atomic.NewFolder(tmp_path / "run")  # it held something: never removed
  full.discard()
  assert os.listdir(tmp_path / "run") == ["x"]
  (tmp_path / "file").write_text("1")
  with pytest.raises(NotADirectoryError, match="is a file"):
    atomic.NewFolder(tmp_path / "file" / "run")


def test_an_output_never_replaces_an_input(tmp_path):
  src = tmp_path / "in.mp4"
  src.write_bytes(b"video")
  folder = tmp_path / "clips"
  folder.mkdir()
  (folder / "a.mp4").write_bytes(b"video")
  (tmp_path / "link.mp4").symlink_to(src)
  os.link(src, tmp_path / "hard.mp4")
  for out, inp, word in [(src, src, "is"), (folder, folder / "a.mp4", "holds"),
                         (src, tmp_path / "link.mp4", "is"), (tmp_path / "hard.mp4", src, "is")]:
    with pytest.raises(atomic.OutputIsInputError, match=f"output {out} {word} the input {inp}:"):
      atomic.check_keeps_inputs(out, [("the checkpoint", None), ("the input", inp)])
  # A new output, one inside the input's folder, or a folder whose name only starts alike: fine.
  (tmp_path / "clips2").mkdir()
  for out in [tmp_path / "new.mp4", folder / "b.mp4", tmp_path / "clips2"]:
    atomic.check_keeps_inputs(out, [("the input", folder / "a.mp4"), ("the input", src)])
  assert src.read_bytes() == b"video" and (folder / "a.mp4").read_bytes() == b"video"


def test_a_file_never_replaces_a_folder_with_files(tmp_path):
  (tmp_path / "out.json").mkdir()
  (tmp_path / "out.json" / "mine.txt").write_text("mine")
  with pytest.raises(atomic.NotReplaceableError, match="out.json is a folder with files in it"):
    atomic.write_text(tmp_path / "out.json", "{}", overwrite=True)
  assert (tmp_path / "out.json" / "mine.txt").read_text() == "mine"
  (tmp_path / "out.json" / "mine.txt").unlink()  # an empty folder may go
  atomic.write_text(tmp_path / "out.json", "{}", overwrite=True)
  assert (tmp_path / "out.json").read_text() == "{}" and _names(tmp_path) == ["out.json"]


def test_overwrite_writes_through_a_link_and_never_replaces_a_device_or_pipe(tmp_path):
  # `colorize in.mp4 /dev/null --overwrite` as root replaced the system's /dev/null with a file;
  # a pipe and a link were replaced by plain files too.
  target = tmp_path / "film.mp4"
  target.write_bytes(b"old")
  link = tmp_path / "link.mp4"
  link.symlink_to("film.mp4")
  atomic.watch(link)
  with atomic.AtomicOutput(link, overwrite=True) as out:
    with open(out.tmp, "wb") as f:
      f.write(b"new")
  assert os.path.islink(link) and target.read_bytes() == b"new"
  assert atomic.was_committed(link)  # (a Ctrl-C now is after the output is whole)
  # A link to a folder is replaced itself, never the folder it names and the files in it.
  photos = tmp_path / "photos"
  photos.mkdir()
  (photos / "wedding.jpg").write_bytes(b"jpeg")
  folder_link = tmp_path / "ckpt"
  folder_link.symlink_to("photos")
  with atomic.AtomicOutput(folder_link, overwrite=True) as out:
    pathlib.Path(out.tmp).write_bytes(b"weights")
  assert (photos / "wedding.jpg").read_bytes() == b"jpeg" and _names(photos) == ["wedding.jpg"]
  assert folder_link.read_bytes() == b"weights" and not os.path.islink(folder_link)
  pipe = tmp_path / "pipe.mp4"
  os.mkfifo(pipe)
  pipe_link = tmp_path / "to_pipe.mp4"
  pipe_link.symlink_to(pipe)
  sock = socket.socket(socket.AF_UNIX)
  sock.bind(str(tmp_path / "sock.mp4"))
  for path, kind in ((pipe, "named pipe"), (pipe_link, "named pipe"), ("/dev/null", "device"),
                     (tmp_path / "sock.mp4", "socket")):
    with pytest.raises(atomic.NotReplaceableError) as e:
      atomic.AtomicOutput(path, overwrite=True)
    assert str(e.value) == (f"{path} is a {kind}, not a file: --overwrite never replaces it; "
                            "choose another output")
  sock.close()
  assert _names(tmp_path) == ["ckpt", "film.mp4", "link.mp4", "photos", "pipe.mp4", "sock.mp4",
                              "to_pipe.mp4"]
  assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


def test_what_a_killed_writer_left_is_removed_when_the_output_is_written_again(tmp_path):
  # kill -9 runs no handler: a run's temporary output stays. The next write of the same output
  # removes it if its process (on this host) is gone; nothing else.
  path = tmp_path / "clip.mp4"
  with atomic.AtomicOutput(path, suffix=".mp4") as out:
    name = os.path.basename(out.tmp)
  assert name.startswith(".clip.mp4.tmp-") and name.endswith(".mp4")
  host, pid = name.split(".tmp-", 1)[1].split("-")[:2]
  assert pid == str(os.getpid())
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  left = {
      "killed": f".clip.mp4.tmp-{host}-{dead.pid}-0123abcd.mp4",
      "killed_folder": f".clip.mp4.tmp-{host}-{dead.pid}-4567abcd",
      "live": f".clip.mp4.tmp-{host}-{os.getpid()}-89abcdef.mp4",
      "other_host": f".clip.mp4.tmp-{'0' * 6 if host != '0' * 6 else '1' * 6}-{dead.pid}-"
                    "0123abcd.mp4",
      "swapped_old": f".clip.mp4.tmp-{host}-{dead.pid}-0123abcd.old",  # a user's earlier output
      "other_output": f".other.mp4.tmp-{host}-{dead.pid}-0123abcd.mp4",
  }
  for key, leftover in left.items():
    if key == "killed_folder":
      (tmp_path / leftover).mkdir()
      (tmp_path / leftover / "f.png").write_bytes(b"x")
    else:
      (tmp_path / leftover).write_bytes(b"x")
  with atomic.AtomicOutput(path, suffix=".mp4", overwrite=True) as out:
    pathlib.Path(out.tmp).write_bytes(b"new")
  assert path.read_bytes() == b"new"
  assert _names(tmp_path) == sorted(
      ["clip.mp4"] + [v for k, v in left.items() if not k.startswith("killed")])
