"""What a frame folder's file names tell a user: files that look like frames but are not read as
ones (other image formats), files read as frames that are named unlike the others, and names that
are not UTF-8 text (which CSV, JSON and datasets store)."""

import collections
import os
import re

# Image formats FFmpeg could decode but a frame folder does not read (only PNG and JPEG are checked
# cheaply from their headers): named in a warning instead of dropped silently.
OTHER_IMAGE_EXTENSIONS = (".bmp", ".tif", ".tiff", ".webp", ".gif", ".tga", ".dpx", ".exr", ".jp2",
                          ".ppm", ".pgm", ".heic", ".heif", ".avif")


def not_utf8_problem(clip, names):
  """A sentence naming the first of a clip's `names` (its own and its frames') that is not UTF-8
  text (undecodable bytes of a file name, kept as surrogate escapes), else None."""
  for text in names:
    try:
      text.encode("utf-8")
    except UnicodeEncodeError:
      shown = lambda t: t.encode("utf-8", "backslashreplace").decode()
      return (f"clip {shown(clip)}: the name {shown(text)} is not UTF-8 text (a name from another "
              "system's encoding?): rename it")
  return None


def _listed(names, limit=3):
  return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def odd_names_note(folder, names):
  """A sentence if some frame names are unlike most (digits as '#', extension in lower case: a
  "cover.png" among "f_001.png" .. "f_120.png"), else None."""
  patterns = [re.sub(r"\d+", "#", os.path.splitext(n)[0]) + os.path.splitext(n)[1].lower()
              for n in names]
  common, count = (collections.Counter(patterns).most_common(1) or [("", 0)])[0]
  odd = [n for n, p in zip(names, patterns, strict=True) if p != common]
  if "#" not in common or not odd or 2 * count <= len(names):  # most: more than half
    return None
  return (f"{folder}: files named unlike its other frames ({names[patterns.index(common)]}) are "
          f"read as frames too, in name order ({len(odd)} of {len(names)}): {_listed(odd)}")


def ignored_images_note(folder, entries, natural_key):
  """A sentence if the folder's `entries` hold images in a format frame folders do not read."""
  other = sorted((n for n in entries if not n.startswith(".")
                  and os.path.splitext(n)[1].lower() in OTHER_IMAGE_EXTENSIONS), key=natural_key)
  if not other:
    return None
  many = len(other) > 1
  return (f"{folder}: {len(other)} image{'s' if many else ''} in a format frame folders do not "
          f"read (only PNG and JPEG) {'are' if many else 'is'} not used as "
          f"{'frames' if many else 'a frame'}: {_listed(other)} "
          f"(convert {'them' if many else 'it'} to PNG)")


def folder_note(folder, names, entries, natural_key):
  """`ignored_images_note` and `odd_names_note` in one sentence, or None."""
  notes = [n for n in (ignored_images_note(folder, entries, natural_key),
                       odd_names_note(folder, names)) if n]
  return "; ".join(notes[:1] + [n[len(folder) + 2:] for n in notes[1:]]) or None
