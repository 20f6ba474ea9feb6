"""How the tool commands report bad input and write their outputs.

Bad input is one line on stderr naming the thing and what was expected, exit code 2. An output is written under a
temporary name beside its destination and renamed into place only when complete, so an interrupted or failed run
leaves nothing at --out; an existing output is replaced only with --overwrite.
"""
import contextlib
import os
import shutil
import sys
import tempfile


class UsageError(Exception):
  """Bad input of a command (path, flag, checkpoint, image): printed as one line, exit code 2."""


_HELP = ("--help", "-help", "-h", "--helpshort", "-helpshort", "-?")
_HELP_FULL = ("--helpfull", "-helpfull")


def _parse_flags(argv):
  """absl's flag parsing, with --help on stdout and exit code 0 and a bad flag value as one line and exit code 2
  (absl alone exits 1 for both, and prints two lines for a bad value)."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  options = argv[1:argv.index("--")] if "--" in argv else argv[1:]
  if any(arg in _HELP_FULL for arg in options):
    app.usage(shorthelp=False, writeto_stdout=True, exitcode=0)
  if any(arg in _HELP for arg in options):
    app.usage(shorthelp=True, writeto_stdout=True, exitcode=0)  # the command's own flags; --helpfull adds absl's
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.stderr.write("error: %s\n" % str(e).strip().splitlines()[0])
    sys.exit(2)


def run_command(run):
  """Runs the command function run(argv) under absl.app with one-line errors and exit code 2 for bad input."""
  from absl import app  # pylint: disable=g-import-not-at-top
  app.run(main_with_usage_errors(run), flags_parser=_parse_flags)


def bad_input_errors():
  """The exception classes that mean bad input, not a bug: this module's UsageError, each layer's family
  (input.errors.InputError, vit_raw.errors.ModelError, launch.errors.UsageError) and OSError (a path that cannot be
  read or written). Any other exception keeps its traceback."""
  from input.errors import InputError  # pylint: disable=g-import-not-at-top
  from launch.errors import UsageError as LaunchUsageError  # pylint: disable=g-import-not-at-top
  from vit_raw.errors import ModelError  # pylint: disable=g-import-not-at-top
  return (UsageError, InputError, ModelError, LaunchUsageError, IOError, OSError)


def main_with_usage_errors(run):
  """An absl `main(argv)` that calls run(argv) and turns bad input (bad_input_errors) into one line, exit 2."""

  def main(argv):
    try:
      run(argv)
    except bad_input_errors() as e:
      text = str(e).strip().splitlines()
      sys.stderr.write("error: %s\n" % (text[0] if text else type(e).__name__))
      sys.exit(2)

  return main


def check_out_path(path, overwrite, flag="--out"):
  """Refuses (UsageError) an output path that exists without --overwrite or whose folder does not exist."""
  if not path:
    raise UsageError("%s is required" % flag)
  if os.path.lexists(path) and not overwrite:
    raise UsageError("%s %s already exists; pass --overwrite to replace it" % (flag, path))
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(folder):
    raise UsageError("%s %s: folder %s does not exist" % (flag, path, folder))


@contextlib.contextmanager
def atomic_output(path, is_dir=False):
  """Yields a temporary path beside `path`; on success it replaces `path`, on any error it is removed.

  The temporary name starts with a dot and has a random part, so a crash can leave at most a hidden `.NAME.tmp-*`
  beside the destination, never a half-written file at it.
  """
  folder, name = os.path.split(os.path.abspath(path))
  if is_dir:
    tmp = tempfile.mkdtemp(prefix="." + name + ".tmp-", dir=folder)
  else:
    handle, tmp = tempfile.mkstemp(prefix="." + name + ".tmp-", dir=folder)
    os.close(handle)
  try:
    yield tmp
    _replace(tmp, path, is_dir)
  except BaseException:
    _remove(tmp)
    raise


def _replace(tmp, path, is_dir):
  if not is_dir:
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; an export is meant to be shared
    os.replace(tmp, path)
    return
  os.chmod(tmp, 0o755)
  if os.path.lexists(path):
    # A directory cannot be replaced in one rename: move the old one aside first, then drop it.
    old = tempfile.mkdtemp(prefix="." + os.path.basename(path) + ".old-", dir=os.path.dirname(os.path.abspath(path)))
    os.rmdir(old)
    os.rename(path, old)
    os.rename(tmp, path)
    _remove(old)
  else:
    os.rename(tmp, path)


def _remove(path):
  if os.path.isdir(path) and not os.path.islink(path):
    shutil.rmtree(path, ignore_errors=True)
  elif os.path.lexists(path):
    os.remove(path)


def size_mb(path):
  """Size of a file, or of every file under a folder, in MB (10^6 bytes)."""
  if os.path.isdir(path):
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)
  else:
    total = os.path.getsize(path)
  return total / 1e6
