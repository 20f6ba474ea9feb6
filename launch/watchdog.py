"""A watchdog for collectives that would wait forever for a rank that died.

TF 1.15's collective ops ignore operation_timeout_in_ms: when one rank is killed, the others block in their next
all-reduce for good. Every rank's tf.train.Server answers on its TF_CONFIG address for as long as the process lives,
so a thread that connects to each peer every few seconds sees a death within `interval * misses` seconds (a killed
process's port refuses at once; a lost machine times out) and ends this process with one line naming the lost rank.
Horovod (horovodrun ends the job) and HCCL (its own timeouts) do not need it.
"""
import os
import re
import socket
import sys
import threading
import time


class PeerWatchdog(object):
  """Polls every peer's address from a daemon thread; calls on_lost(rank, address, reason) once when one is lost.

  A peer counts as lost after `misses` failed connections in a row once it has answered, or when it has never
  answered `startup_seconds` after the watchdog started (it did not come up at all).
  """

  def __init__(self, peers, on_lost, interval=2.0, misses=3, startup_seconds=300.0, connect_timeout=2.0):
    self.peers = dict(peers)
    self.on_lost = on_lost
    self.interval, self.misses, self.startup_seconds = interval, misses, startup_seconds
    self.connect_timeout = connect_timeout
    self._stop = threading.Event()
    self._all_up = threading.Event()
    self._thread = None

  def start(self):
    if self.peers:
      self._thread = threading.Thread(target=self._run, name="peer-watchdog", daemon=True)
      self._thread.start()
    return self

  def stop(self):
    """Stops polling (call after the last collective: peers then exit at their own pace)."""
    self._stop.set()

  def all_up(self):
    """Every peer took part in a collective: from now on an unanswered poll means it is gone."""
    self._all_up.set()

  def _answers(self, address):
    try:
      socket.create_connection(address, timeout=self.connect_timeout).close()
      return True, None
    except (OSError, socket.timeout) as e:
      return False, getattr(e, "strerror", None) or str(e) or type(e).__name__

  def _run(self):
    started = time.time()
    seen, failures = set(), {rank: 0 for rank in self.peers}
    while not self._stop.wait(self.interval):
      for rank, address in sorted(self.peers.items()):
        ok, reason = self._answers(address)
        if self._stop.is_set():
          return
        if self._all_up.is_set():
          seen.add(rank)
        if ok:
          seen.add(rank)
          failures[rank] = 0
          continue
        failures[rank] += 1
        if rank in seen and failures[rank] >= self.misses:
          self.on_lost(rank, address, "stopped answering: %s" % reason)
          return
        if rank not in seen and time.time() - started > self.startup_seconds:
          self.on_lost(rank, address, "never answered in %.0f s: %s" % (self.startup_seconds, reason))
          return


class RankGuard(object):
  """A training process's side of losing a rank: a PeerWatchdog over the engine's peers whose verdict ends this
  process with one line (stderr and train.log) naming the lost rank and the checkpoint a rerun resumes from.

  finish() after the last collective stops the watchdog; stop() then waits `linger_seconds` when peers may still be
  pulling this rank's share of that collective (TF's collectives pull from the sender).
  """

  def __init__(self, engine, model_dir, linger_seconds=2.0, **watchdog_args):
    self.engine, self.model_dir, self.linger_seconds = engine, model_dir, linger_seconds
    self._watchdog = PeerWatchdog(engine.peers(), self._lost, **watchdog_args)
    self._finished = False

  def start(self):
    self._watchdog.start()
    return self

  def connected(self):
    """Call after the first collective that every rank ran (the variable broadcast)."""
    self._watchdog.all_up()

  def finish(self):
    self._watchdog.stop()
    self._finished = True

  def stop(self):
    self._watchdog.stop()
    if self._finished and self.engine.peers():
      time.sleep(self.linger_seconds)

  def explain(self, error):
    """The one line for a collective that failed with `error` (a tf.errors.OpError): the peers that do not answer
    now (or the task the error names), and where a rerun resumes."""
    lost = []
    for rank, address in sorted(self.engine.peers().items()):
      ok, _ = self._watchdog._answers(address)  # pylint: disable=protected-access
      if not ok:
        lost.append(rank)
    if not lost:
      lost = sorted(
          set(int(t) for t in re.findall(r"/job:worker/replica:0/task:(\d+)", str(error.message))) - {self.engine.rank})
    text = str(error.message)
    cause = re.search(r"aborted by: ([^\n]+)", text)
    lines = [l for l in text.strip().splitlines() if l.strip() and not l.rstrip().endswith(":")]
    first = cause.group(1) if cause else (lines[0].strip() if lines else "no message")
    latest = _newest_checkpoint(self.model_dir)
    who = "lost rank %s" % ", ".join(str(r) for r in lost) if lost else "a collective failed"
    return ("%s (%s: %s); rank %d stops too. Rerun the same command to resume from %s" %
            (who, type(error).__name__, first, self.engine.rank, latest or "the start (no checkpoint yet)"))

  def _lost(self, rank, address, reason):
    latest = _newest_checkpoint(self.model_dir)
    message = ("lost rank %d (%s:%d %s): it died or its machine is gone, and the collectives would wait for it "
               "forever; rank %d stops too. Rerun the same command to resume from %s" %
               (rank, address[0], address[1], reason, self.engine.rank, latest or "the start (no checkpoint yet)"))
    line = "launch.train: error: %s\n" % message
    sys.stderr.write(line)
    sys.stderr.flush()
    if self.engine.rank == 0:
      with open(os.path.join(self.model_dir, "train.log"), "a") as f:
        f.write(line)
    os._exit(1)  # the main thread is blocked inside a collective; input workers die with us (PR_SET_PDEATHSIG)


def _newest_checkpoint(model_dir):
  """Where a rerun resumes: the newest readable checkpoint, as the trainer's own restore chooses it (a damaged
  `checkpoint` state file does not hide it)."""
  from launch import checkpoints  # pylint: disable=g-import-not-at-top (TensorFlow: only when a rank is lost)
  return checkpoints.newest_readable(model_dir)
