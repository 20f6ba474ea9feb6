"""image_codec.decode_image, the one decoder of the pipeline and the tools: what it decodes, and every file it refuses
(with its reason) before decoding: non-regular files, non-images, truncated JPEGs, decompression bombs."""
import json
import os
import signal
import subprocess
import sys

import cv2
import numpy as np
import pytest

from input import image_codec, image_headers
from input.image_codec import DecodeError, decode_image
from tests.input_helpers import encode, jpeg_claiming, noisy, png_bomb, write_bytes, write_image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _reason(path, **kwargs):
  with pytest.raises(DecodeError) as info:
    decode_image(str(path), **kwargs)
  assert "\n" not in str(info.value)
  return info.value.reason


def _smooth(h=48, w=64):
  return cv2.resize(noisy(3, (6, 8)), (w, h), interpolation=cv2.INTER_CUBIC)


@pytest.mark.parametrize("ext, params, lossless", [
    (".jpg", [], False),
    (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1], False),
    (".jpg", [cv2.IMWRITE_JPEG_RST_INTERVAL, 1], False),
    (".png", [], True),
    (".bmp", [], True),
    (".webp", [], False),
    (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101], True),
])
def test_header_size_matches_the_decoded_image(tmp_path, ext, params, lossless):
  image = _smooth()
  data = encode(ext, image, params)
  header = image_headers.read_header(data)
  decoded = decode_image(write_bytes(str(tmp_path / ("x" + ext)), data))
  assert (header.height, header.width, header.end) == (48, 64, len(data))
  assert decoded.shape == (48, 64, 3) and decoded.dtype == np.uint8
  difference = np.abs(decoded.astype(int) - image).mean()
  assert difference == 0 if lossless else difference < 8  # RGB order, the right pixels


def test_gray_and_alpha_pngs_become_rgb(tmp_path):
  gray = write_bytes(str(tmp_path / "g.png"), cv2.imencode(".png", np.full((5, 7), 90, np.uint8))[1].tobytes())
  rgba = np.concatenate([_smooth(), np.full((48, 64, 1), 7, np.uint8)], axis=-1)
  alpha = write_bytes(str(tmp_path / "a.png"), cv2.imencode(".png", rgba)[1].tobytes())
  assert decode_image(gray).shape == (5, 7, 3) and decode_image(gray).min() == 90
  assert np.array_equal(decode_image(alpha), rgba[..., 2::-1])  # BGRA on disk -> RGB


def test_jpeg_with_a_video_appended_decodes_like_the_plain_jpeg(tmp_path):
  plain = encode(".jpg", _smooth())
  # A phone's motion photo: the JPEG, then an MP4 (which may hold any bytes, an FF D9 pair too).
  trailer = b"\x00\x00\x00\x18ftypmp42" + np.random.RandomState(0).bytes(50000) + b"\xff\xd9junk"
  motion = write_bytes(str(tmp_path / "motion.jpg"), plain + trailer)
  assert image_headers.read_header(plain + trailer).end == len(plain)
  assert np.array_equal(decode_image(motion), decode_image(write_bytes(str(tmp_path / "plain.jpg"), plain)))


def test_truncated_jpegs_are_refused_not_filled_with_gray(tmp_path, capfd):
  data = encode(".jpg", noisy(1, (64, 64)))
  cut = write_bytes(str(tmp_path / "cut.jpg"), data[:len(data) // 2])
  assert "truncated JPEG" in _reason(cut)
  # The end-of-image marker is there, the data before it is not: libjpeg warns and fills gray; we refuse.
  patched = write_bytes(str(tmp_path / "patched.jpg"), data[:len(data) // 2] + b"\xff\xd9")
  reason = _reason(patched)
  assert "truncated JPEG" in reason and "premature end" in reason
  assert capfd.readouterr().err == ""  # libjpeg's message is in the reason, not on stderr


def test_non_regular_files_are_refused_without_blocking(tmp_path):
  fifo = str(tmp_path / "fifo.jpg")
  os.mkfifo(fifo)
  (tmp_path / "folder.jpg").mkdir()
  os.symlink(str(tmp_path / "gone.jpg"), str(tmp_path / "dangling.jpg"))
  os.symlink("/dev/zero", str(tmp_path / "device.jpg"))
  (tmp_path / "empty.jpg").write_bytes(b"")
  signal.signal(signal.SIGALRM, lambda *_: pytest.fail("reading a FIFO blocked"))
  signal.alarm(20)
  try:
    assert _reason(fifo) == "a FIFO, not a regular file"
  finally:
    signal.alarm(0)
  assert _reason(tmp_path / "folder.jpg") == "a directory, not a regular file"
  assert _reason(tmp_path / "device.jpg") == "a character device, not a regular file"
  assert _reason(tmp_path / "dangling.jpg") == "dangling symlink"
  assert _reason(tmp_path / "missing.jpg") == "does not exist"
  assert _reason(tmp_path / "empty.jpg") == "zero-byte file"


def test_files_that_are_not_images_say_what_they_are(tmp_path):
  pointer = write_bytes(str(tmp_path / "a.jpg"), b"version https://git-lfs.github.com/spec/v1\noid sha256:0\n")
  assert "Git LFS pointer" in _reason(pointer)
  html = write_bytes(str(tmp_path / "b.png"), b"<!DOCTYPE html><html>")
  assert "not a JPEG, PNG, BMP or WebP image" in _reason(html) and "<!DOCTYPE" in _reason(html)
  gif = write_bytes(str(tmp_path / "c.jpg"), b"GIF89a\x01\x00\x01\x00")
  assert "GIF" in _reason(gif)


def test_pixel_budget_refuses_bombs_from_the_header(tmp_path):
  # Exactly OpenCV's own limit (2^30 pixels): only the header is written, so nothing big exists anywhere.
  png = write_bytes(str(tmp_path / "bomb.png"), png_bomb(32768, with_pixels=False))
  reason = _reason(png)
  assert "32768x32768" in reason and "pixel budget of %d" % image_codec.DEFAULT_MAX_PIXELS in reason
  jpeg = write_bytes(str(tmp_path / "bomb.jpg"), jpeg_claiming(60000, 60000))
  assert "60000x60000" in _reason(jpeg) and "pixel budget" in _reason(jpeg)
  assert "too little image data for the 60000x60000 image" in _reason(jpeg, max_pixels=None)
  # Inside the budget but far too little data for its size: libjpeg would return a flat gray image.
  inside = write_bytes(str(tmp_path / "gray.jpg"), jpeg_claiming(9000, 9000))
  assert "too little image data for the 9000x9000 image" in _reason(inside)
  small = write_image(str(tmp_path / "small.png"), noisy(2, (40, 40)))
  assert "1600 pixels exceeds the pixel budget of 1000" in _reason(small, max_pixels=1000)
  assert decode_image(small, max_pixels=1600).shape == (40, 40, 3)
  assert decode_image(small, max_pixels=None).shape == (40, 40, 3)


def test_decoder_messages_are_attributed_not_printed(tmp_path, capfd):
  data = bytearray(encode(".png", noisy(4, (32, 32))))
  start = data.find(b"IDAT") + 4
  data[start + 10:start + 30] = b"\x00" * 20  # damaged compressed data: libpng prints an error
  broken = write_bytes(str(tmp_path / "broken.png"), bytes(data))
  for _ in range(3):  # every retry: the reason each time, never a line on stderr
    assert "libpng error" in _reason(broken)
  out, err = capfd.readouterr()
  assert (out, err) == ("", "")


def test_a_name_with_a_newline_stays_on_one_line(tmp_path):
  path = write_bytes(str(tmp_path / "two\nlines.jpg"), b"not an image")
  with pytest.raises(DecodeError) as info:
    decode_image(path)
  assert "\n" not in str(info.value) and repr(path) in str(info.value)


BOMB_CHILD = r"""
import json, resource, sys
# If the guard were broken, this turns a runaway decode into a failed allocation instead of a machine out of memory.
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
from input.datasets import open_dataset
from input.pipeline import InputPipeline
dataset = open_dataset("imagefolder", sys.argv[1], "val")
with InputPipeline(dataset, 16, 4, False, workers=1) as pipe:
  kept = sum(int(mask.sum()) for _, _, mask in pipe.batches())
  with open("/proc/%d/status" % pipe.worker_pids[0]) as f:
    peak_kb = [int(line.split()[1]) for line in f if line.startswith("VmHWM")][0]
  print(json.dumps({"kept": kept, "bad": pipe.bad_files, "worker_peak_mb": peak_kb / 1024.0,
                    "tensorflow": "tensorflow" in sys.modules}))
"""


def test_pixel_bomb_in_a_worker_is_skipped_without_allocating(tmp_path):
  for i in range(3):
    write_image(str(tmp_path / "a" / ("%d.png" % i)), noisy(i))
    write_image(str(tmp_path / "b" / ("%d.jpg" % i)), noisy(10 + i))
  # 20000x20000 1-bit pixels in about 40 KB: a decode would need 1.2 GB for the BGR image alone.
  bomb_png = write_bytes(str(tmp_path / "b" / "bomb.png"), png_bomb(20000))
  bomb_jpg = write_bytes(str(tmp_path / "a" / "bomb.jpg"), jpeg_claiming(60000, 60000))
  env = dict(os.environ, PYTHONPATH=REPO)
  done = subprocess.run([sys.executable, "-c", BOMB_CHILD, str(tmp_path)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, universal_newlines=True, timeout=120)
  assert done.returncode == 0, done.stderr[-3000:]
  result = json.loads(done.stdout.strip().splitlines()[-1])
  assert not result["tensorflow"]  # the worker's baseline is numpy + OpenCV only
  assert result["worker_peak_mb"] < 300, result
  assert result["kept"] == 6 and sorted(result["bad"]) == sorted([bomb_png, bomb_jpg])
  assert all("pixel budget" in reason for reason in result["bad"].values())
