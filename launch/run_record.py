"""What a run folder says about itself, so that a run can be reproduced and its model used without repeating flags.

A trainer run leaves in its --model_dir:
  flags.txt         every flag of launch.train that has a value, one `--name=value` per line (absl's flagfile
                    form): `python -m launch.train --flagfile=<model_dir>/flags.txt` runs it again;
  plan.json         the resolved plan (launch/plan.py: every "auto" decided), for reading, not for feeding back;
  class_names.txt   one class name per line, in label order;
  model.ckpt-<step> the checkpoints.
`run_model(model_dir)` reads them back into what a tool needs to rebuild the model (tools.infer, tools.export, ...).
"""
import collections
import json
import os

from launch import checkpoints
from vit_raw import configs

FLAGS_FILE = "flags.txt"
PLAN_FILE = "plan.json"
CLASS_NAMES_FILE = "class_names.txt"

RunModel = collections.namedtuple("RunModel", ["config", "image_size", "num_classes", "class_names", "checkpoint"])
RunModel.__doc__ = """The model of a run folder.

Attributes:
  config: the vit_raw ViTConfig the run trained (shape overrides applied).
  image_size: side of the square model input.
  num_classes: classes of the head (len(class_names)).
  class_names: list of names in label order.
  checkpoint: prefix of the latest checkpoint in the folder (None when there is none yet).
"""


def write_flag_lines(model_dir, lines):
  """Writes <model_dir>/flags.txt from `--name=value` lines; returns its path."""
  path = os.path.join(model_dir, FLAGS_FILE)
  _write_atomic(path, "".join(line + "\n" for line in lines))
  return path


def write_plan(model_dir, plan_json):
  """Writes <model_dir>/plan.json from launch.plan.to_json's value; returns its path."""
  path = os.path.join(model_dir, PLAN_FILE)
  _write_atomic(path, json.dumps(plan_json, indent=1) + "\n")
  return path


def write_class_names(model_dir, class_names):
  path = os.path.join(model_dir, CLASS_NAMES_FILE)
  _write_atomic(path, "".join(name + "\n" for name in class_names))
  return path


def _write_atomic(path, text):
  """Writes `path` under a temporary name, then renames it: a full disk leaves the previous file, never half a
  file (nor the temporary one)."""
  tmp = path + ".tmp"
  try:
    with open(tmp, "w") as f:
      f.write(text)
    os.replace(tmp, path)
  except OSError:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def read_flags(model_dir):
  """OrderedDict flag name -> value text from <model_dir>/flags.txt. Raises ValueError (one line) when the file is
  missing or a line is not a flag."""
  path = os.path.join(model_dir, FLAGS_FILE)
  if not os.path.isfile(path):
    raise ValueError("%s does not exist: %s is not a run folder of launch.train (or predates flags.txt)" %
                     (path, model_dir))
  with open(path) as f:
    return parse_flag_lines(f.read().split("\n"), path)


def parse_flag_lines(lines, where="flags"):
  """OrderedDict flag name -> value text of `--name=value` lines (`--noname` -> "false", `--name` -> "true")."""
  values = collections.OrderedDict()
  for number, line in enumerate(lines, 1):
    text = line.strip()
    if not text or text.startswith("#"):
      continue
    if not text.startswith("--"):
      raise ValueError("%s line %d: %r is not a --flag=value line" % (where, number, text))
    name, sep, value = text[2:].partition("=")
    if not sep:
      name, value = (name[2:], "false") if name.startswith("no") and len(name) > 2 else (name, "true")
    values[name] = value
  return values


def read_class_names(model_dir):
  """The class names of a run folder, or None when it has no class_names.txt."""
  path = os.path.join(model_dir, CLASS_NAMES_FILE)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return [line.rstrip("\n") for line in f if line.strip()]


def run_model(model_dir):
  """RunModel of the run in `model_dir`; raises ValueError (one line) when the folder does not describe a model."""
  if not os.path.isdir(model_dir):
    raise ValueError("--model_dir=%s is not a folder" % model_dir)
  values = read_flags(model_dir)
  shape = {k: values[k] for k in configs.CONFIG_FIELDS if k in values}
  config = configs.get_config(values.get("model", "tiny"), **shape)
  image_size = int(values.get("image_size", 16))
  class_names = read_class_names(model_dir)
  if not class_names:
    raise ValueError("%s has no %s: the class count of the run is unknown" % (model_dir, CLASS_NAMES_FILE))
  return RunModel(config, image_size, len(class_names), class_names, checkpoints.newest_readable(model_dir))
