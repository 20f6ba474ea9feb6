"""The command line: bad flags fail before any work with one line and exit code 2; --help explains the flags."""
import os
import re
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
    (["--seed=-1"], "--seed must be >= 0, got -1"),
    (["--lr=nan"], "--lr=nan is not a finite number"),
    (["--lean_backward=mlp,softmax"], "--lean_backward=mlp,softmax: expected auto, none, or a comma list"),
    (["--over_dump", "--data_dump_flag", "--over_dump_path=/a", "--data_dump_path=/b"], "one dump_path"),
    (["--mixup=-0.2"], "--mixup=-0.2: a Beta alpha must be > 0"),
    (["--ema_decay=1.5"], "--ema_decay=1.5: expected a decay in (0, 1)"),
    (["--layer_decay=0"], "--layer_decay=0.0: expected a factor in (0, 1]"),
    (["--layer_decay=1.2"], "--layer_decay=1.2: expected a factor in (0, 1]"),
    (["--random_erasing=2"], "--random_erasing=2.0: expected a probability in [0, 1]"),
    (["--drop_path=1"], "--drop_path must be in [0, 1)"),
    (["--stem=conv", "--patch_size=6", "--image_size=12"], "--stem=conv halves the image"),
    (["--stem=hybrid"], "--stem=hybrid: value should be one of <patch|conv>"),
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
    (["--randaugment=rand-m9-x"], "--randaugment=rand-m9-x: unknown part 'x'; expected rand-m<magnitude"),
    (["--label_offset=-1"], "label_offset -1 applies to TFRecord shards only"),
    (["--mixup=-0.5"], "--mixup=-0.5: a Beta alpha must be > 0 (or 0 for off)"),
    (["--dataset=idx", "--data_dir=/no/such/mnist"], "/no/such/mnist does not exist"),
])
def test_bad_combinations_are_one_clear_error(tmp_path, args, expected):
  with pytest.raises(FlagError) as err:
    run_trainer(str(tmp_path), *args)
  assert expected in str(err.value)
  assert "\n" not in str(err.value)


def test_model_dir_that_is_a_file_is_one_line(tmp_path):
  path = tmp_path / "a_file"
  path.write_text("not a folder")
  result = _cli("--model_dir=%s" % path)
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert "launch.train: error: --model_dir=%s is a file, not a folder" % path in result.stderr


def test_help_lists_every_trainer_flag_with_its_text_and_exits_0():
  from launch import flags as flags_lib  # pylint: disable=g-import-not-at-top
  result = _cli("--help")
  assert result.returncode == 0
  for name in flags_lib.trainer_flag_names():
    assert "--" + name + ":" in result.stdout or "--[no]" + name + ":" in result.stdout, name
  assert "Decode/augment worker processes" in result.stdout  # the text of a flag, not only its name
  assert "only_check_args" not in result.stdout  # absl's own flags only with --helpfull
  full = _cli("--helpfull")
  assert full.returncode == 0 and "only_check_args" in full.stdout and "--iterations_per_loop" in full.stdout


def test_console_lines_are_compact_and_train_log_keeps_the_full_prefix(tmp_path):
  result = _cli("--model_dir=%s" % tmp_path, "--hidden_size=16", "--num_layers=1", "--num_heads=2", "--mlp_dim=32",
                "--train_steps=4", "--iterations_per_loop=2", "--mode=train", "--workers=0")
  assert result.returncode == 0, result.stderr
  (console,) = [l for l in result.stderr.splitlines() if "train: epoch" in l and "step 4/4" in l]
  assert re.match(r"^\d\d:\d\d:\d\d train: epoch", console)
  with open(os.path.join(str(tmp_path), "train.log")) as f:
    (logged,) = [l for l in f if "train: epoch" in l and "step 4/4" in l]
  assert re.match(r"^I\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \w+\.py:\d+\] train: epoch", logged)
