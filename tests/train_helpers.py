"""Runs the trainer in-process on a tiny model (one TF import for the whole test session) and reads what it wrote."""
import os

from absl import flags
import tensorflow.compat.v1 as tf

from launch import log_format
from launch import metrics
from launch import train

# A 1-block ViT of width 16 on 8x8 digits in 4x4 patches: a training step takes milliseconds.
TINY_ARGS = [
    "--model=tiny", "--hidden_size=16", "--num_layers=1", "--num_heads=2", "--mlp_dim=32", "--image_size=8",
    "--patch_size=4", "--train_batch_size=32", "--eval_batch_size=64", "--workers=0", "--lr=0.05",
    "--lr_warmup_steps=2", "--label_smoothing=0", "--seed=3"
]


def run_trainer(model_dir, *args, **kwargs):
  """Parses TINY_ARGS + args (later flags win), runs launch.train in a fresh graph; returns its summary record.
  tiny=False leaves TINY_ARGS out."""
  fv = flags.FLAGS
  fv.unparse_flags()
  fv(["launch.train", "--model_dir=%s" % model_dir] + (TINY_ARGS if kwargs.get("tiny", True) else []) + list(args))
  try:
    with tf.Graph().as_default():
      return train.run(fv)
  finally:
    fv.unparse_flags()


def read_log(model_dir):
  """(train records, eval records, summary records) parsed from the text lines of <model_dir>/train.log."""
  kinds = {"train": [], "eval": [], "summary": []}
  with open(os.path.join(model_dir, "train.log")) as f:
    for line in f:
      parsed = log_format.parse_line(line)
      if parsed and parsed[0] in kinds:
        kinds[parsed[0]].append(parsed[1])
  return kinds["train"], kinds["eval"], kinds["summary"]


def read_metrics(model_dir, event=None):
  """The records of <model_dir>/metrics.jsonl (only those of `event` when given)."""
  records = metrics.read_jsonl(os.path.join(model_dir, metrics.METRICS_FILE))
  return [r for r in records if event is None or r["event"] == event]


def log_text(model_dir):
  with open(os.path.join(model_dir, "train.log")) as f:
    return f.read()
