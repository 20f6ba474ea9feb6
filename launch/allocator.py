"""The training process's memory allocator: tcmalloc when the machine has it, glibc's malloc otherwise.

TensorFlow's CPU allocator takes every tensor buffer from malloc and frees it when the last op using it is done.
glibc's malloc serves the megabyte-sized activation buffers of a training step with fresh mmaps and unmaps them on
free, so every step faults its activations in again, page by page. Measured here (2026-12-04, 2-vCPU AMD EPYC,
TF 2.21, the Fashion-MNIST model at batch 128): 135,000-160,000 minor page faults a second and 40 % of the process's
CPU time in the kernel with glibc; 400 a second with tcmalloc, which keeps freed pages for reuse, and 2.6x the
steady img/s (docs/benchmarks.md). A preloaded allocator must be in the process from its start, so
`python -m launch.train` restarts itself once with tcmalloc in LD_PRELOAD, before TensorFlow is imported.

--malloc=system on the command line (or VIT_MALLOC=system in the environment) keeps glibc's; --malloc=tcmalloc
insists (the run stops with one line when no tcmalloc is found). The library is Debian/Ubuntu's
libtcmalloc-minimal4 (`make setup` installs it when it can); VIT_TCMALLOC names another file.
"""
import os
import sys

CHOICES = ("auto", "tcmalloc", "system")
ENV = "VIT_MALLOC"
LIBRARY_ENV = "VIT_TCMALLOC"
_RESTARTED = "VIT_MALLOC_RESTARTED"  # set in the restarted process, so a preload that does not take is tried once
LIBRARY = "libtcmalloc_minimal.so.4"
SEARCH_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")


def flag_value(argv, name, default=None):
  """The value of --name=V or --name V on a command line (the last one given wins), else `default`; read before
  absl parses the flags (no flagfiles)."""
  value = default
  for i, arg in enumerate(argv):
    if arg.startswith("--%s=" % name):
      value = arg.split("=", 1)[1]
    elif arg == "--" + name and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def requested(argv, environ):
  """The --malloc choice of a command line (the last one given wins), else $VIT_MALLOC, else "auto"."""
  return flag_value(argv, "malloc", environ.get(ENV) or "auto")


def find_library(environ=None, search_dirs=SEARCH_DIRS):
  """The path of tcmalloc on this machine ($VIT_TCMALLOC first), or None."""
  environ = os.environ if environ is None else environ
  named = environ.get(LIBRARY_ENV)
  if named:
    return named if os.path.isfile(named) else None
  return next((os.path.join(d, LIBRARY) for d in search_dirs if os.path.isfile(os.path.join(d, LIBRARY))), None)


def preloaded(environ):
  """Whether LD_PRELOAD already names a tcmalloc."""
  return any("tcmalloc" in os.path.basename(p) for p in environ.get("LD_PRELOAD", "").replace(":", " ").split())


def restart_command(argv, environ):
  """(executable, argv, environment) to restart `python -m launch.train argv[1:]` with tcmalloc preloaded, or None
  when the process should go on as it is (asked not to, already preloaded or restarted, or no tcmalloc here)."""
  if requested(argv, environ) not in ("auto", "tcmalloc") or preloaded(environ) or environ.get(_RESTARTED):
    return None
  library = find_library(environ)
  if library is None:
    return None
  preload = " ".join(p for p in (library, environ.get("LD_PRELOAD", "")) if p)
  env = dict(environ, LD_PRELOAD=preload, **{_RESTARTED: "1"})
  return sys.executable, [sys.executable, "-m", "launch.train"] + list(argv[1:]), env


def restart_with_tcmalloc():
  """Replaces this process by the same command with tcmalloc preloaded, when restart_command says so."""
  command = restart_command(sys.argv, os.environ)
  if command is not None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(*command)


def in_use(maps_path="/proc/self/maps"):
  """The path of the tcmalloc mapped into this process, or None (glibc's malloc, or no /proc to tell)."""
  try:
    with open(maps_path) as f:
      for line in f:
        if "tcmalloc" in line:
          return line.split()[-1]
  except OSError:
    pass
  return None


def status(choice, maps_path="/proc/self/maps"):
  """(ok, one line for the run log): which allocator this process runs with; ok is False when --malloc=tcmalloc
  was asked for and the process does not have it."""
  library = in_use(maps_path)
  if library:
    return True, "malloc: tcmalloc (%s)" % library
  if choice == "system":
    return True, "malloc: glibc's (--malloc=system)"
  line = "malloc: glibc's: %s; small models train up to 2.6x faster with tcmalloc (docs/benchmarks.md)" % why_not()
  return choice != "tcmalloc", line


def why_not():
  """Why this process runs without tcmalloc, in a few words."""
  where = find_library()
  if where:
    return "%s is here but did not load (LD_PRELOAD=%s)" % (where, os.environ.get("LD_PRELOAD", ""))
  return "no %s found (Debian/Ubuntu: apt-get install libtcmalloc-minimal4, or set %s)" % (LIBRARY, LIBRARY_ENV)
