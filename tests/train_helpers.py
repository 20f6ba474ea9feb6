"""Runs the trainer in-process on a tiny model (one TF import for the whole test session) and reads its log."""
import os

from absl import flags
import tensorflow.compat.v1 as tf

from launch import log_format
from launch import train

# A 1-block ViT of width 16 on 8x8 digits in 4x4 patches: a training step takes milliseconds.
TINY_ARGS = [
    "--model=tiny", "--hidden_size=16", "--num_layers=1", "--num_heads=2", "--mlp_dim=32", "--image_size=8",
    "--patch_size=4", "--train_batch_size=32", "--eval_batch_size=64", "--workers=0", "--lr=0.05",
    "--lr_warmup_steps=2", "--label_smoothing=0", "--seed=3"
]


def run_trainer(model_dir, *args):
  """Parses TINY_ARGS + args (later flags win), runs launch.train in a fresh graph; returns the run's result."""
  fv = flags.FLAGS
  fv.unparse_flags()
  fv(["launch.train", "--model_dir=%s" % model_dir] + TINY_ARGS + list(args))
  try:
    with tf.Graph().as_default():
      return train.run(fv)
  finally:
    fv.unparse_flags()


def read_log(model_dir):
  """(train records, eval records, summary records) parsed from <model_dir>/train.log."""
  kinds = {"train": [], "eval": [], "summary": []}
  with open(os.path.join(model_dir, "train.log")) as f:
    for line in f:
      parsed = log_format.parse_line(line)
      if parsed:
        kinds[parsed[0]].append(parsed[1])
  return kinds["train"], kinds["eval"], kinds["summary"]
