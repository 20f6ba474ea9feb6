"""The commands of tools/ share one command line: --help explains every flag a command defines and exits 0, a bad
flag value is one `error:` line and exit code 2 (tools/command.py; tools/bench_peer.py keeps argparse, same rules)."""
import os
import re
import subprocess
import sys

import pytest

from tests import tool_helpers

# Each command, and a flag of it given a value of the wrong type.
COMMANDS = [
    ("tools.parse_log", "--warmup_steps=x"),
    ("tools.bench_e2e", "--num_images=x"),
    ("tools.bench_input", "--batch_size=x"),
    ("tools.bench_listing", "--num_files=x"),
    ("tools.bench_loop", "--steps=x"),
    ("tools.bench_distributed", "--repeats=x"),
    ("tools.bench_model", "--steps=x"),
    ("tools.bench_infer", "--warmup=x"),
    ("tools.bench_soak", "--minutes=x"),
]

# Prints the names of the flags that importing the module (and its define_flags(), where it has one) adds to absl's;
# TensorFlow's own (it defines some on import) are not the command's.
_DEFINED = """
import importlib, sys
from absl import app, flags
import tensorflow
before = set(flags.FLAGS)
module = importlib.import_module(sys.argv[1])
if hasattr(module, "define_flags"):
  module.define_flags()
print(" ".join(sorted(set(flags.FLAGS) - before)))
"""


def _defined_flags(module):
  done = tool_helpers.run_tool_script(sys.executable, _DEFINED, module)
  assert done.returncode == 0, done.stderr[-3000:]
  names = done.stdout.split()
  assert names, module
  return names


@pytest.mark.parametrize("module", [m for m, _ in COMMANDS])
def test_help_explains_every_flag_and_exits_0(module):
  done = tool_helpers.run_tool(module, "--help")
  assert done.returncode == 0, done.stderr[-3000:]
  for name in _defined_flags(module):
    match = re.search(r"^  --(?:\[no\])?%s: (.*)$" % re.escape(name), done.stdout, re.M)
    assert match and match.group(1).strip(), (module, name)  # named, with a text
  assert "only_check_args" not in done.stdout  # absl's own flags only with --helpfull


@pytest.mark.parametrize("module,bad", COMMANDS)
def test_a_bad_flag_value_is_one_line_and_exit_2(module, bad):
  done = tool_helpers.run_tool(module, bad)
  tool_helpers.assert_usage_error(done, bad.split("=")[0])


def test_an_unknown_flag_is_one_line_and_exit_2():
  tool_helpers.assert_usage_error(tool_helpers.run_tool("tools.bench_loop", "--no_such_flag=1"), "no_such_flag")


def test_parse_log_bad_input_is_one_line(tmp_path):
  tool_helpers.assert_usage_error(tool_helpers.run_tool("tools.parse_log"), "RUN")
  missing = str(tmp_path / "missing.jsonl")
  tool_helpers.assert_usage_error(tool_helpers.run_tool("tools.parse_log", missing), "cannot read", missing)


def _bench_peer(*args):
  # -S: no site-packages, so neither absl nor torch; PYTHONPATH empty: not the project either (as users run it).
  env = dict(os.environ, PYTHONPATH="")
  return subprocess.run(
      [sys.executable, "-S", os.path.join(tool_helpers.ROOT, "tools", "bench_peer.py")] + list(args),
      cwd=tool_helpers.ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
      timeout=60)


def test_bench_peer_help_and_bad_value_without_torch_or_absl():
  with open(os.path.join(tool_helpers.ROOT, "tools", "bench_peer.py")) as f:
    names = re.findall(r'add_argument\("--(\w+)"', f.read())
  done = _bench_peer("--help")
  assert done.returncode == 0, done.stderr
  text = re.sub(r"\s+", " ", done.stdout)
  for name in names:
    assert re.search(r"--%s(?: [A-Z_]+)? [a-z(]" % name, text), name  # each flag with its explanation
  tool_helpers.assert_usage_error(_bench_peer("--steps=x"), "--steps")
  tool_helpers.assert_usage_error(_bench_peer("--fashion_dir", tool_helpers.ROOT, "--epochs", "0"), "--epochs")
  tool_helpers.assert_usage_error(_bench_peer("--fashion_dir", tool_helpers.ROOT), "lacks train-images-idx3-ubyte.gz")
