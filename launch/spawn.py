"""python -m launch.spawn: N data-parallel ranks of launch.train on this machine.

  python -m launch.spawn --num_ranks 2 [--distribute auto|collective|horovod] -- <launch.train flags>

collective: one `python -m launch.train` per rank, each with a TF_CONFIG naming N free localhost ports (and
RANK_ID/RANK_SIZE to match). horovod: `horovodrun -np N -H localhost:N --gloo python -m launch.train ...`.
auto: horovod where it is installed for this TensorFlow, else collective (BUILD_NOTES.md says why).

With the collective engine each rank gets its own share of the cores (CPU affinity), so its TensorFlow threads and
input workers size themselves to it. Each rank's output goes to <model_dir>/rank_<r>.log; rank 0's is also shown
here, and so is every error line of the others. When a rank fails the others get `--grace` seconds to notice and
stop by themselves (their last line names the lost rank), then they are terminated; Ctrl-C terminates all of them.
No rank outlives the launcher, even a launcher killed with SIGKILL (the kernel signals its children). The exit
code is the first failing rank's (1 for a signal), 0 when every rank succeeded.
"""
import argparse
import ctypes
import ctypes.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

from launch import allocator

_HOROVOD_LINE = re.compile(r"^\[(\d+)\]<(stdout|stderr)>:(.*)$")


def free_ports(count):
  """`count` distinct TCP ports that were free on localhost a moment ago."""
  sockets, ports = [], []
  try:
    for _ in range(count):
      s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
      s.bind(("127.0.0.1", 0))
      sockets.append(s)
      ports.append(s.getsockname()[1])
  finally:
    for s in sockets:
      s.close()
  return ports


def tf_config(ports, index):
  """The TF_CONFIG of worker `index` of a localhost cluster on `ports`."""
  return json.dumps({
      "cluster": {
          "worker": ["localhost:%d" % p for p in ports]
      },
      "task": {
          "type": "worker",
          "index": index
      }
  })


def outputs_of(procs, timeout):
  """The combined stdout+stderr of each of `procs` (Popen with text pipes), waiting at most `timeout` seconds for
  each; every process is killed on the way out, also when one of them times out."""
  outputs = []
  try:
    for proc in procs:
      outputs.append(proc.communicate(timeout=timeout)[0])
  finally:
    for proc in procs:
      proc.kill()
  return outputs


def horovod_installed():
  """True when horovod.tensorflow's compiled library is installed in this interpreter (checked without importing
  TensorFlow)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.find_spec("horovod")
  if spec is None or not spec.submodule_search_locations:
    return False
  folder = os.path.join(list(spec.submodule_search_locations)[0], "tensorflow")
  return os.path.isdir(folder) and any(name.startswith("mpi_lib") for name in os.listdir(folder))


def installed_engines():
  """The CPU/GPU data-parallel engines this interpreter can run: TensorFlow's collective ops always, Horovod where
  it is built."""
  return ["collective"] + (["horovod"] if horovod_installed() else [])


def model_dir_of(train_args):
  """The --model_dir among launch.train's flags (its default otherwise)."""
  return allocator.flag_value(train_args, "model_dir", "runs/default")


def _die_with_parent():
  """Runs in each child before exec: the kernel sends it SIGTERM when the launcher dies, whatever kills it."""
  if sys.platform.startswith("linux"):
    try:
      libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
      libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
      pass


def core_shares(num_ranks):
  """Disjoint sets of this process's cores, one per rank (None when there are fewer cores than ranks): a rank's
  TensorFlow threads and input workers then size themselves to its share instead of all fighting for every core."""
  if not hasattr(os, "sched_getaffinity"):
    return None
  cores = sorted(os.sched_getaffinity(0))
  each = len(cores) // num_ranks
  if each < 1:
    return None
  return [set(cores[r * each:(r + 1) * each]) for r in range(num_ranks)]


def _child_setup(cores):

  def setup():
    _die_with_parent()
    if cores:
      os.sched_setaffinity(0, cores)

  return setup


def describe_exit(code):
  if code is None:
    return "is running"
  if code < 0:
    try:
      return "was killed by %s" % signal.Signals(-code).name
    except ValueError:
      return "was killed by signal %d" % -code
  return "exited with code %d" % code


class Rank(object):
  """One child process and the files its lines go to.

  Attributes:
    ranks: the ranks whose output this process writes (all of them for horovodrun).
    proc: the subprocess.Popen.
  """

  def __init__(self, command, env, ranks, log_paths, console, demux=False, cores=None):
    self.ranks = ranks
    self._files = {r: open(log_paths[r], "a") for r in ranks}
    self._console = console
    self._demux = demux
    self.proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_child_setup(cores))
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()

  def _read(self):
    for raw in iter(self.proc.stdout.readline, b""):
      line = raw.decode("utf-8", "replace").rstrip("\n")
      rank = self.ranks[0]
      if self._demux:
        match = _HOROVOD_LINE.match(line)
        if match:
          rank, line = int(match.group(1)), match.group(3)
        else:
          rank = None  # horovodrun's own lines
      if rank is not None and rank in self._files:
        self._files[rank].write(line + "\n")
        self._files[rank].flush()
      self._console(rank, line)

  def finish(self):
    self._reader.join(timeout=5)
    for f in self._files.values():
      f.close()

  def signal(self, signum):
    """Sends `signum` to the child's whole process group (horovodrun's ranks, input workers)."""
    try:
      os.killpg(self.proc.pid, signum)
    except (ProcessLookupError, PermissionError):
      pass


class Launcher(object):
  """Starts the ranks and watches them (see the module docstring)."""

  def __init__(self, num_ranks, engine, train_args, grace_seconds=30.0, python=sys.executable, out=sys.stdout):
    self.num_ranks, self.engine, self.train_args = num_ranks, engine, list(train_args)
    self.grace_seconds = grace_seconds
    self.python = python
    self.out = out
    self.model_dir = model_dir_of(self.train_args)
    self.children = []
    self._lock = threading.Lock()

  def say(self, text):
    with self._lock:
      self.out.write(text + "\n")
      self.out.flush()

  def _console(self, rank, line):
    if rank == 0:
      self.say(line)
    elif rank is None or "error" in line.lower() or "lost rank" in line:
      self.say(("[rank %d] " % rank if rank is not None else "") + line)

  def start(self):
    os.makedirs(self.model_dir, exist_ok=True)
    logs = {r: os.path.join(self.model_dir, "rank_%d.log" % r) for r in range(self.num_ranks)}
    train = [self.python, "-m", "launch.train"] + self.train_args
    env = dict(os.environ)
    for name in ("TF_CONFIG", "RANK_ID", "RANK_SIZE", "HOROVOD_RANK", "HOROVOD_SIZE"):
      env.pop(name, None)
    if self.engine == "horovod":
      horovodrun = os.path.join(os.path.dirname(self.python), "horovodrun")
      command = [
          horovodrun if os.path.exists(horovodrun) else "horovodrun", "-np",
          str(self.num_ranks), "-H",
          "localhost:%d" % self.num_ranks, "--gloo"
      ] + train + ["--distribute=horovod"]
      self.children.append(Rank(command, env, list(range(self.num_ranks)), logs, self._console, demux=True))
    else:
      ports = free_ports(self.num_ranks)
      shares = core_shares(self.num_ranks)
      for r in range(self.num_ranks):
        rank_env = dict(env, TF_CONFIG=tf_config(ports, r), RANK_ID=str(r), RANK_SIZE=str(self.num_ranks))
        self.children.append(
            Rank(train + ["--distribute=collective"], rank_env, [r], logs, self._console,
                 cores=shares[r] if shares else None))
    self.say("launch.spawn: %d ranks (%s), logs in %s" %
             (self.num_ranks, self.engine, os.path.join(self.model_dir, "rank_<r>.log")))
    return self

  def _running(self):
    return [c for c in self.children if c.proc.poll() is None]

  def _stop_all(self, signum=signal.SIGTERM, wait_seconds=10.0):
    for child in self._running():
      child.signal(signum)
    deadline = time.time() + wait_seconds
    while self._running() and time.time() < deadline:
      time.sleep(0.1)
    for child in self._running():
      child.signal(signal.SIGKILL)
    for child in self.children:
      child.proc.wait()

  def wait(self):
    """Watches the ranks until all have exited; returns the launcher's exit code."""
    failed = None
    try:
      while self._running():
        time.sleep(0.2)
        for child in self.children:
          code = child.proc.poll()
          if code not in (None, 0) and failed is None:
            failed = child
            names = "rank %d" % child.ranks[0] if len(child.ranks) == 1 else "horovodrun"
            self.say("launch.spawn: %s %s; the other ranks get %.0f s to stop by themselves" %
                     (names, describe_exit(code), self.grace_seconds))
        if failed is not None and self._running():
          deadline = time.time() + self.grace_seconds
          while self._running() and time.time() < deadline:
            time.sleep(0.2)
          if self._running():
            self.say("launch.spawn: stopping the %d rank(s) still running" % len(self._running()))
          self._stop_all()
    except KeyboardInterrupt:
      # Every rank gets SIGTERM: they agree on one step to stop at, checkpoint it and exit (launch/interrupts.py);
      # they get the grace period (at least a minute: a loop may have to finish first) before SIGKILL.
      self.say("launch.spawn: interrupted; asking every rank to checkpoint and stop")
      self._stop_all(wait_seconds=max(60.0, self.grace_seconds))
      return 130
    finally:
      for child in self.children:
        child.finish()
    codes = [c.proc.returncode for c in self.children]
    if failed is not None:
      return failed.proc.returncode if failed.proc.returncode > 0 else 1
    bad = [c for c in codes if c != 0]
    return (bad[0] if bad[0] > 0 else 1) if bad else 0


def parse_args(argv):
  parser = argparse.ArgumentParser(
      prog="python -m launch.spawn", description="Starts N data-parallel ranks of launch.train on this machine.",
      usage="python -m launch.spawn --num_ranks N [--distribute auto|collective|horovod] -- <launch.train flags>")
  parser.add_argument("--num_ranks", type=int, required=True, help="ranks (processes) to start")
  parser.add_argument("--distribute", default="auto", choices=["auto", "collective", "horovod"],
                      help="engine: auto = horovod where installed, else collective")
  parser.add_argument("--grace", type=float, default=30.0,
                      help="seconds the other ranks get to stop by themselves after one failed")
  if "--" in argv:
    split = argv.index("--")
    ours, train_args = argv[:split], argv[split + 1:]
  else:
    ours, train_args = argv, []
  args = parser.parse_args(ours)
  if args.num_ranks < 1:
    parser.error("--num_ranks must be at least 1")
  return args, train_args


def main(argv=None):
  args, train_args = parse_args(sys.argv[1:] if argv is None else argv)
  engine = args.distribute
  if engine == "auto":
    engine = "horovod" if horovod_installed() else "collective"
  if engine == "horovod" and not horovod_installed():
    sys.stderr.write("launch.spawn: error: --distribute=horovod but Horovod is not installed for %s (make "
                     "setup-horovod); use --distribute=collective\n" % sys.executable)
    return 2
  launcher = Launcher(args.num_ranks, engine, train_args, grace_seconds=args.grace).start()

  def _terminate(signum, frame):
    del frame
    raise KeyboardInterrupt()

  signal.signal(signal.SIGTERM, _terminate)
  return launcher.wait()


if __name__ == "__main__":
  sys.exit(main())
