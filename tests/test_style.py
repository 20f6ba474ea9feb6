"""One style everywhere: yapf with the checked-in .style.yapf (Google style, 2-space indents) changes no file."""
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
