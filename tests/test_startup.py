"""What a process start costs: the trainer and the tools import neither Keras nor scikit-learn (2.3 s of CPU per
start on TF 2.21 with Keras installed: BUILD_NOTES.md, why make setup-tf2 uninstalls Keras), on either stack."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = ("launch.train", "launch.spawn", "tools.export")  # one process: their absl flags must not clash


def test_the_trainer_and_the_tools_import_no_keras_and_no_scikit_learn():
  code = ("import sys\nimport %s\n"
          "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))" % ", ".join(MODULES))
  done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        universal_newlines=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert done.returncode == 0, done.stderr[-2000:]
  loaded = set(done.stdout.split())
  assert "tensorflow" in loaded  # the imports did happen
  assert not loaded & {"keras", "sklearn"}, ("%s imported at start-up; on TF 2.x `make setup-tf2` uninstalls Keras "
                                             "(BUILD_NOTES.md)" % sorted(loaded & {"keras", "sklearn"}))
