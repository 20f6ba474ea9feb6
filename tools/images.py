"""Image files for the tool commands: which paths an argument names, how one file is read, how it is sized.

Every tool reads images through `load_rgb`, which uses the training pipeline's decoder (input.image_codec), so a
file the trainer would skip as corrupt is skipped here too, and never classified in silence.
"""
import os

import cv2
import numpy as np

from input import image_codec

LIST_EXTENSIONS = (".txt",)


class ImageError(ValueError):
  """One image that cannot be used (missing, not a regular file, undecodable); the tools skip it with a line."""


def load_rgb(path, max_pixels=image_codec.DEFAULT_MAX_PIXELS):
  """uint8 RGB [H, W, 3] of the image file `path`, through the training pipeline's decoder and its checks
  (regular file, not truncated, not a decompression bomb); raises ImageError with the path and the reason."""
  if not os.path.exists(path):
    raise ImageError("%s does not exist" % path)
  try:
    return image_codec.decode_image(path, max_pixels)
  except image_codec.DecodeError as e:
    raise ImageError("%s: %s" % (path, e.reason))


def resize_for_model(rgb, size):
  """The evaluation resize of the input pipeline: the whole image to size=(height, width), uint8 RGB.

  Area averaging when shrinking by 2x or more in both directions, bilinear otherwise (input/augment.py's rule).
  """
  out_h, out_w = size
  h, w = rgb.shape[:2]
  if (h, w) == (out_h, out_w):
    return rgb
  shrink = h >= 2 * out_h and w >= 2 * out_w
  return cv2.resize(rgb, (out_w, out_h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _images_in_folder(folder):
  found = []
  for root, dirs, files in os.walk(folder):
    dirs.sort()
    found.extend(os.path.join(root, f) for f in sorted(files) if image_codec.is_image_file(f))
  return found


def _paths_in_list(list_path):
  """Image paths of a list file: one per line, an optional integer label last (the trainer's list format)."""
  folder = os.path.dirname(os.path.abspath(list_path))
  paths = []
  with open(list_path) as f:
    for line in f:
      text = line.strip()
      if not text or text.startswith("#"):
        continue
      parts = text.rsplit(None, 1)
      if len(parts) == 2 and parts[1].isdigit() and not os.path.exists(os.path.join(folder, text)):
        text = parts[0]
      paths.append(text if os.path.isabs(text) else os.path.normpath(os.path.join(folder, text)))
  return paths


def expand(arguments):
  """Image paths named by command-line arguments, in order: files as given, folders searched recursively for
  image files (sorted), .txt list files read. Returns (paths, problems): one line per argument that names nothing.
  """
  paths, problems = [], []
  for arg in arguments:
    if os.path.isdir(arg):
      found = _images_in_folder(arg)
      if not found:
        problems.append("%s is a folder without image files (%s)" % (arg, " ".join(image_codec.IMAGE_EXTENSIONS)))
      paths.extend(found)
    elif os.path.isfile(arg) and os.path.splitext(arg)[1].lower() in LIST_EXTENSIONS:
      found = _paths_in_list(arg)
      if not found:
        problems.append("list file %s names no images" % arg)
      paths.extend(found)
    elif not os.path.exists(arg):
      problems.append("%s does not exist" % arg)
    else:
      paths.append(arg)  # decoded later; a file that is not an image is reported then
  return paths, problems


def batches(paths, size, batch_size, report):
  """Yields (paths, uint8 [n, H, W, 3]) of up to batch_size decodable images resized to `size`; each file that
  cannot be read is passed to report(line) and skipped."""
  chunk_paths, chunk = [], []
  for path in paths:
    try:
      chunk.append(resize_for_model(load_rgb(path), size))
      chunk_paths.append(path)
    except ImageError as e:
      report("skipped %s" % e)
      continue
    if len(chunk) == batch_size:
      yield chunk_paths, np.stack(chunk)
      chunk_paths, chunk = [], []
  if chunk:
    yield chunk_paths, np.stack(chunk)
