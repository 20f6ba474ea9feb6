"""One style everywhere: yapf with the checked-in .style.yapf (Google style, 2-space indents) changes no file, and
no line (comments and docstrings included) is longer than its column limit."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("vit_raw", "input", "launch", "tools", "tests")


def test_every_python_file_is_formatted():
  done = subprocess.run([sys.executable, "-m", "yapf", "--diff", "--recursive", "--parallel"] + list(PACKAGES),
                        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
  assert done.returncode == 0 and not done.stdout, ("files not in the project's style; run `make format`:\n%s%s" %
                                                    (done.stdout[:4000], done.stderr[-2000:]))


def test_no_line_is_longer_than_the_column_limit():
  # yapf reflows code but leaves comments and docstrings as written: those are held to .style.yapf's limit here.
  with open(os.path.join(ROOT, ".style.yapf")) as f:
    limit = int([line.split("=")[1] for line in f if line.startswith("column_limit")][0])
  long_lines = []
  for package in PACKAGES:
    for folder, _, names in os.walk(os.path.join(ROOT, package)):
      for name in sorted(n for n in names if n.endswith(".py")):
        path = os.path.join(folder, name)
        with open(path, encoding="utf-8") as f:
          long_lines += [
              "%s:%d" % (os.path.relpath(path, ROOT), i)
              for i, line in enumerate(f, 1)
              if len(line.rstrip("\n")) > limit
          ]
  assert not long_lines, "lines over %d columns: %s" % (limit, ", ".join(long_lines))
