"""python -m tools.compare_checkpoints A B: whether two checkpoints hold bit-identical variables.

A and B are checkpoint prefixes (model.ckpt-1100) or run folders (their latest checkpoint). Prints how many
variables were compared and the ones that differ (by name, with the largest absolute difference), or that are in
only one of them; exit code 0 when every variable is bit-identical, 1 otherwise, 2 for a path that is no checkpoint.
Used to show that a refactoring changed nothing (the same seed and flags before and after give the same weights).
  --ignore REGEX   leave out variables whose name matches (e.g. 'Adam|ema/' to compare the model alone)
"""
import re
import sys

from absl import flags
import numpy as np

from tools import command

FLAGS = flags.FLAGS
flags.DEFINE_string("ignore", None, "Leave out variables whose name matches this regular expression.")


def load(path):
  """{name: array} of every variable of a checkpoint prefix or of a run folder's latest checkpoint."""
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  from launch import checkpoints  # pylint: disable=g-import-not-at-top
  # A run folder: its newest readable checkpoint, as the trainer resumes (a damaged state file hides none).
  prefix = (checkpoints.newest_readable(path) or tf.train.latest_checkpoint(path)) if tf.io.gfile.isdir(path) else path
  if not prefix:
    raise command.UsageError("%s: a folder without a checkpoint; expected a checkpoint prefix or a run folder" % path)
  try:
    reader = tf.train.load_checkpoint(prefix)
  except (tf.errors.OpError, ValueError) as e:
    raise command.UsageError("%s: not a readable checkpoint (%s)" % (path, str(e).splitlines()[0]))
  return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def compare(a, b, ignore=None):
  """(names compared, [(name, reason)] of the differences)."""
  keep = (lambda n: not re.search(ignore, n)) if ignore else (lambda n: True)
  names_a, names_b = set(filter(keep, a)), set(filter(keep, b))
  differences = [(n, "only in the first") for n in sorted(names_a - names_b)]
  differences += [(n, "only in the second") for n in sorted(names_b - names_a)]
  both = sorted(names_a & names_b)
  for name in both:
    x, y = np.asarray(a[name]), np.asarray(b[name])
    if x.shape != y.shape:
      differences.append((name, "shape %s vs %s" % (x.shape, y.shape)))
    elif x.tobytes() != y.tobytes():
      gap = np.max(np.abs(x.astype(np.float64) - y.astype(np.float64))) if x.dtype.kind in "fiu" else "?"
      differences.append((name, "differs (max |a - b| = %s)" % gap))
  return both, differences


def run(argv):
  if len(argv) != 3:
    raise command.UsageError("expected two checkpoints: python -m tools.compare_checkpoints A B")
  both, differences = compare(load(argv[1]), load(argv[2]), FLAGS.ignore)
  for name, reason in differences:
    print("%s: %s" % (name, reason))
  print("%d variables compared: %s" %
        (len(both), "bit-identical" if not differences else "%d differences" % len(differences)))
  sys.stdout.flush()
  if differences:
    sys.exit(1)


if __name__ == "__main__":
  command.run_command(run)
