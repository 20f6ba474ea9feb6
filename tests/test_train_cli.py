"""The command line: bad flags fail before any work with one line and exit code 2; --help explains the flags."""
import os
import subprocess
import sys

import pytest

from launch.flags import FlagError
from tests.train_helpers import run_trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run([sys.executable, "-m", "launch.train"] + list(args), cwd=REPO, env=env, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, universal_newlines=True, timeout=120)


@pytest.mark.parametrize("args,expected", [
    (["--no_such_flag=1"], "no_such_flag"),
    (["--num_epochs=1", "--train_steps=5"], "conflict"),
    (["--model=ViT-Q/7"], "unknown model"),
])
def test_bad_flags_exit_2_with_one_line(tmp_path, args, expected):
  result = _cli("--model_dir=%s" % tmp_path, *args)
  assert result.returncode == 2
  assert "Traceback" not in result.stderr
  lines = [l for l in result.stderr.splitlines() if "launch.train: error:" in l]
  assert len(lines) == 1 and expected in lines[0]
  assert not os.path.exists(os.path.join(str(tmp_path), "train.log"))  # failed before any work


@pytest.mark.parametrize("args,expected", [
    (["--image_size=10"], "not divisible by the patch size 4"),
    (["--data_dir=/no/such/folder"], "/no/such/folder does not exist"),
    (["--eval_batch_size=400"], "larger than the 359 examples"),
    (["--iterations_per_loop=50"], "larger than an epoch (44 steps"),
    (["--lr_warmup_epochs=1", "--lr_warmup_steps=3"], "conflict"),
    (["--train_batch_size=5000"], "larger than this rank's 1438"),
    (["--mode=eval"], "needs a checkpoint"),
    (["--init_checkpoint=/no/such.npz"], "does not exist"),
    (["--loss_scale=banana"], "--loss_scale=banana"),
    (["--rank=2", "--num_ranks=2"], "outside"),
])
def test_bad_combinations_are_one_clear_error(tmp_path, args, expected):
  with pytest.raises(FlagError) as err:
    run_trainer(str(tmp_path), *args)
  assert expected in str(err.value)
  assert "\n" not in str(err.value)


def test_help_explains_every_flag():
  result = _cli("--helpfull")  # absl prints the help to stdout and exits 1 by its own convention
  for name in ("iterations_per_loop", "precision_mode", "loss_scale", "over_dump", "data_dump_step", "profiling",
               "fusion_switch_file", "lr_warmup_epochs", "init_checkpoint", "eval_every_loops", "augment", "device"):
    assert "--" + name in result.stdout
