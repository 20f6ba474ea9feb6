"""Which weights the tools use: a run's moving average (EMA) when its checkpoint holds one (--weights auto), the
trained weights on request (--weights raw), and one line when the asked-for set is not there."""
import os
import tempfile

import numpy as np
import pytest

from tests import tool_helpers
from tools import exporters
from tools import model_source
from tools.command import UsageError
from vit_raw import checkpoint_mapping
from vit_raw import configs


@pytest.fixture(scope="module")
def runs():
  directory = tempfile.mkdtemp()
  trained, averaged = tool_helpers.tiny_params(seed=0), tool_helpers.tiny_params(seed=1)
  return {
      "trained": trained,
      "averaged": averaged,
      "with_ema": tool_helpers.write_run(os.path.join(directory, "ema"), trained, ema_params=averaged),
      "plain": tool_helpers.write_run(os.path.join(directory, "plain"), trained),
      "npz": tool_helpers.write_npz(os.path.join(directory, "tiny.npz"), trained),
  }


def _ours(params):
  values, _ = checkpoint_mapping.official_to_ours(params, configs.get_config("tiny", **tool_helpers.SHAPE))
  return values


def _assert_values(source, params):
  want = _ours(params)
  assert sorted(source.values) == sorted(want)
  for name, value in want.items():
    np.testing.assert_array_equal(source.values[name], value, err_msg=name)


def test_auto_takes_the_moving_average_when_the_checkpoint_holds_one(runs):
  source = model_source.from_run(runs["with_ema"])
  assert source.weights == "ema"
  _assert_values(source, runs["averaged"])
  assert "moving average" in model_source.describe(source)
  plain = model_source.from_run(runs["plain"])
  assert plain.weights == "raw"
  _assert_values(plain, runs["trained"])


def test_raw_takes_the_trained_weights_beside_a_moving_average(runs):
  source = model_source.from_run(runs["with_ema"], weights="raw")
  assert source.weights == "raw"
  _assert_values(source, runs["trained"])


def test_asking_for_a_moving_average_that_is_not_there_is_one_line(runs):
  with pytest.raises(UsageError, match="holds no moving average.*--ema_decay"):
    model_source.from_run(runs["plain"], weights="ema")
  with pytest.raises(UsageError, match="holds no moving average"):
    model_source.from_checkpoint(runs["npz"], "tiny", shape=tool_helpers.SHAPE, weights="ema")


def test_the_npz_export_of_a_run_carries_its_moving_average(runs):
  out = os.path.join(tempfile.mkdtemp(), "vit.npz")
  exporters.export(model_source.from_run(runs["with_ema"]), "npz", out, log=lambda *_: None)
  back = model_source.from_checkpoint(out, "tiny", shape=tool_helpers.SHAPE)
  _assert_values(back, runs["averaged"])


def test_the_commands_say_which_weights_they_use(runs):
  image = os.path.join(tempfile.mkdtemp(), "x.png")
  import cv2  # pylint: disable=g-import-not-at-top
  cv2.imwrite(image, tool_helpers.uint8_images(1)[0])
  done = tool_helpers.run_tool("tools.infer", "--model_dir", runs["with_ema"], image)
  assert done.returncode == 0, done.stderr[-2000:]
  assert "weights: the moving average (EMA)" in done.stderr
  done = tool_helpers.run_tool("tools.infer", "--model_dir", runs["with_ema"], "--weights", "raw", image)
  assert done.returncode == 0, done.stderr[-2000:]
  assert "weights: %s" % runs["with_ema"] in done.stderr and "moving average" not in done.stderr
  done = tool_helpers.run_tool("tools.export", "--model_dir", runs["plain"], "--weights", "ema", "--format", "npz",
                               "--out", os.path.join(tempfile.mkdtemp(), "v.npz"))
  tool_helpers.assert_usage_error(done, "holds no moving average", "--weights raw")
