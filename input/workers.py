"""Worker processes that fill batch slots in shared memory, and the parent-side handle that feeds and watches them.

Design: the parent allocates a ring of `num_slots` batch slots ([slots, B, H, W, 3] uint8) before starting the
workers. It sends small task tuples (generation, batch id, slot, epoch, example indices, mixing task or None) over one
task queue; a free worker decodes and augments the batch straight into that slot (and mixes it) and answers with
(batch id, slot, (replacements, mixing partners), skips) on a result queue. Pixels never go through a pipe or pickle.

Start method: fork (default). The parent has TensorFlow imported and its thread pools running; forking a threaded
process is safe as long as the child never touches what those threads may hold locked, and the workers only run
numpy/OpenCV code (cv2.setNumThreads(1), no TensorFlow). Fork starts a worker in milliseconds and shares the
in-memory dataset (CIFAR arrays, file lists) copy-on-write; spawn must pickle the dataset to each worker and
re-import the main module (which imports TensorFlow) - see README.md (Workers: lifetime, failures, fork vs spawn) for
the measured start-up.
With fork the ring is an anonymous shared mmap (nothing in /dev/shm at all); with spawn it is a
multiprocessing RawArray, whose backing file is unlinked as soon as it is created. Either way a killed parent leaks
no shared-memory segment.

Lifetime: workers set PR_SET_PDEATHSIG(SIGKILL) (Linux) and also poll their parent pid, ignore SIGINT (Ctrl-C goes
to the whole process group; the parent decides), and are daemons. Before each example a worker writes what it is
reading (the file path) into its row of a small shared array, so a worker that dies (killed, out of memory) is
reported by the parent as one WorkerDiedError line naming the worker, its pid, the signal and the file it was
decoding. An UnreadableDatasetError in a worker is re-raised as such in the parent; any other exception as a
RuntimeError with the worker's traceback. close() is idempotent and runs at interpreter exit.

Stalls: a worker that blocks rather than dies (a read from a hung network mount) would hang the run forever. Each
worker stamps the clock into its slot of a shared array when it takes a batch and before each example, and clears
it when the batch is done; with `stall_seconds` set, the parent raises WorkerStalledError naming the worker and
the file once a worker's stamp has stayed the same (and non-zero) for that long. The parent measures that time
itself, on its own clock between its own checks, a gap longer than _MAX_CHECK_GAP counting as _MAX_CHECK_GAP: a
job suspended with Ctrl-Z and resumed an hour later is not a stall. A worker waiting for work is never stalled.

Lost batches: the parent counts the batches it has submitted and not yet had back. When some are outstanding while
every worker is idle, the task queue is empty and no result arrives, for _LOST_SECONDS of the parent's own waiting
(counted as for stalls), the batches were lost between the processes (seen once in a test run: both workers idle,
the parent waiting for a result that never came). That raises BatchLostError, one line, where it would hang forever.
"""
import atexit
import contextlib
import ctypes
import ctypes.util
import mmap
import multiprocessing as mp
import os
import queue
import signal
import sys
import time
import traceback
import weakref

import numpy as np

from input import batch as batch_lib
from input.dataset_base import UnreadableDatasetError
from input.messages import quote
from input.errors import DataError

_POLL_SECONDS = 0.25
_MAX_CHECK_GAP = 10.0  # seconds of the parent's own absence that count towards a stall
_LOST_SECONDS = 30.0  # outstanding batches, idle workers, nothing queued and no result for this long: lost
_CURRENT_BYTES = 1024  # per worker: the path it is reading, NUL-terminated (the tail of a longer one)
_live_pools = weakref.WeakSet()


def _close_live_pools():
  for pool in list(_live_pools):
    pool.close()


atexit.register(_close_live_pools)


@contextlib.contextmanager
def _opencv_threads_stopped(start_method):
  """OpenCV's thread pool is stopped while workers are forked, and restored after.

  A forked child inherits the state of the parent's OpenCV pool but none of its threads; its first
  cv2.setNumThreads() then waits forever on a condition variable that only those threads could release (seen with
  opencv-python 4.10 whenever the parent had run a multi-threaded cv2 call before creating a pipeline).
  """
  if start_method != "fork":
    yield
    return
  import cv2  # pylint: disable=g-import-not-at-top
  previous = cv2.getNumThreads()
  cv2.setNumThreads(1)
  try:
    yield
  finally:
    cv2.setNumThreads(previous)


def _die_with_parent(parent_pid):
  if sys.platform.startswith("linux"):
    try:
      libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
      libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: the kernel kills us when the parent goes
    except (OSError, AttributeError):
      pass
  if os.getppid() != parent_pid:  # the parent died before prctl took effect
    os._exit(1)


def usable_cores():
  """Cores this process may run on (a container's CPU set, not the host's count): the default worker count."""
  return max(1, len(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class WorkerDiedError(RuntimeError):
  """An input worker process died (killed by a signal, e.g. the kernel's out-of-memory killer): the message is one
  line naming the worker, its pid, how it died and the file(s) it was decoding."""


class WorkerStalledError(RuntimeError):
  """A worker made no progress on its batch for longer than the pool's stall_seconds."""


class BatchLostError(RuntimeError):
  """Batches were submitted and never came back although every worker was idle with nothing queued."""


def _shared_bytes(size, ctx, start_method):
  # fork: an anonymous shared mapping has no name, so nothing can leak into /dev/shm whatever kills us.
  if start_method == "fork":
    return mmap.mmap(-1, size, flags=mmap.MAP_SHARED)
  return ctx.RawArray(ctypes.c_uint8, size)


def _current_writer(row, stamps, worker_id):
  """A function that records `where` (a str) in the uint8 array `row` and the time in stamps[worker_id]."""

  def write(where):
    data = where.encode("utf-8", "surrogateescape")[-(len(row) - 1):]
    row[:len(data)] = np.frombuffer(data, dtype=np.uint8)
    row[len(data)] = 0
    stamps[worker_id] = time.monotonic()

  return write


def _read_current(row):
  data = row.tobytes().split(b"\0", 1)[0]
  return data.decode("utf-8", "surrogateescape") if data else None


def _worker_main(worker_id, parent_pid, dataset, transform, buffer, shape, current, stamp_buffer, tasks, results,
                 generation, seed):
  _die_with_parent(parent_pid)
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  signal.signal(signal.SIGTERM, signal.SIG_DFL)
  ring = np.frombuffer(buffer, dtype=np.uint8).reshape(shape)
  my_row = np.frombuffer(current, dtype=np.uint8).reshape(-1, _CURRENT_BYTES)[worker_id]
  stamps = np.frombuffer(stamp_buffer, dtype=np.float64)
  record = _current_writer(my_row, stamps, worker_id)
  scratch = None
  while True:
    try:
      task = tasks.get(timeout=1.0)
    except queue.Empty:
      if os.getppid() != parent_pid:
        return
      continue
    if task is None:
      return
    gen, batch_id, slot, epoch, indices, mix = task
    stamps[worker_id] = time.monotonic()
    if gen != generation.value:  # superseded by a newer iterator: give the slot back without work
      stamps[worker_id] = 0.0
      results.put(("stale", gen, batch_id, slot, None, None))
      continue
    try:
      if mix is not None and scratch is None:
        scratch = np.empty(shape[1:], np.uint8)  # partner rows held by other ranks
      final, skips, partner_final = batch_lib.fill_batch(dataset, transform, ring[slot], epoch, indices, seed, record,
                                                         mix, scratch)
      my_row[0] = 0
      stamps[worker_id] = 0.0
      results.put(("ok", gen, batch_id, slot, (final, partner_final), skips))
    except UnreadableDatasetError as e:
      stamps[worker_id] = 0.0
      results.put(("unreadable", gen, batch_id, slot, worker_id, str(e)))
    except Exception:
      stamps[worker_id] = 0.0
      results.put(("error", gen, batch_id, slot, worker_id, traceback.format_exc()))


def _describe_exit(code):
  if code is not None and code < 0:
    try:
      name = signal.Signals(-code).name
    except ValueError:
      name = "signal %d" % -code
    hint = " (out of memory?)" if -code == signal.SIGKILL else ""
    return "exit code %d, killed by %s%s" % (code, name, hint)
  return "exit code %s" % code


class WorkerPool(object):
  """N worker processes around a ring of shared batch slots.

  Attributes:
    ring: uint8 array [num_slots, B, H, W, 3] in shared memory.
    num_slots: batches that can be in flight or held by the consumer at once.
  """

  def __init__(self, dataset, transform, batch_size, num_workers, num_slots, seed, start_method="fork",
               stall_seconds=None):
    """stall_seconds: a worker that spends longer than this on one example (or between taking a batch and its
    first example) stops the pool with WorkerStalledError; None or 0: wait forever."""
    if start_method not in ("fork", "spawn"):
      # forkserver would make the fork server, not us, the workers' parent (breaks the parent-death checks).
      raise DataError("start_method %r is not supported: expected 'fork' or 'spawn'" % start_method)
    out_h, out_w = transform.out_size
    shape = (num_slots, batch_size, out_h, out_w, 3)
    size = int(np.prod(shape))
    ctx = mp.get_context(start_method)
    self.num_slots = num_slots
    self._closed = False
    self._error = None
    self._buffer = _shared_bytes(size, ctx, start_method)
    self.ring = np.frombuffer(self._buffer, dtype=np.uint8).reshape(shape)
    self._current_buffer = _shared_bytes(num_workers * _CURRENT_BYTES, ctx, start_method)
    self._current = np.frombuffer(self._current_buffer, dtype=np.uint8).reshape(num_workers, _CURRENT_BYTES)
    self._stamp_buffer = _shared_bytes(num_workers * 8, ctx, start_method)
    self._stamps = np.frombuffer(self._stamp_buffer, dtype=np.float64)
    self._stamps[:] = 0.0
    self.stall_seconds = float(stall_seconds) if stall_seconds else None
    self._seen = [0.0] * num_workers  # the stamp each worker had at the last check
    self._stuck = [0.0] * num_workers  # seconds it has kept that stamp, as the parent saw it
    self._last_check = time.monotonic()
    self._outstanding = 0  # batches submitted and not yet answered
    self._idle_waiting = 0.0  # seconds get_result has waited with those outstanding and every worker idle
    self._last_idle_check = time.monotonic()
    self._tasks = ctx.Queue()
    self._results = ctx.Queue()
    self._generation = ctx.RawValue(ctypes.c_long, 0)
    self._procs = []
    _live_pools.add(self)
    parent = os.getpid()
    with _opencv_threads_stopped(start_method):
      for wid in range(num_workers):
        proc = ctx.Process(
            target=_worker_main, name="input-worker-%d" % wid,
            args=(wid, parent, dataset, transform, self._buffer, shape, self._current_buffer, self._stamp_buffer,
                  self._tasks, self._results, self._generation, seed))
        proc.daemon = True
        proc.start()
        self._procs.append(proc)

  @property
  def pids(self):
    return [p.pid for p in self._procs]

  def _check_usable(self):
    if self._error is not None:
      raise self._error
    if self._closed:
      raise RuntimeError("the input pipeline was closed; create a new InputPipeline")

  @property
  def error(self):
    """The exception that stopped this pool, or None."""
    return self._error

  @property
  def generation(self):
    return self._generation.value

  def new_generation(self):
    """Invalidates every queued task (workers skip them) and returns the new generation id."""
    self._check_usable()
    self._generation.value += 1
    return self._generation.value

  def submit(self, gen, batch_id, slot, epoch, indices, mix=None):
    """Queues one batch; mix: None or the batch's batch.MixTask."""
    self._check_usable()
    self._tasks.put((gen, batch_id, slot, epoch, np.asarray(indices, dtype=np.int64), mix))
    self._outstanding += 1

  def current_files(self):
    """What each worker is reading right now (a path, or None when it is between batches)."""
    return [_read_current(row) for row in self._current]

  def _check_workers(self):
    dead = []
    for wid, proc in enumerate(self._procs):
      if proc.exitcode is not None:
        where = _read_current(self._current[wid])
        dead.append("input worker %d (pid %d) died with %s %s" % (wid, proc.pid, _describe_exit(
            proc.exitcode), "while decoding %s" % quote(where) if where else "between batches"))
    if dead:
      self._error = WorkerDiedError("%s; the input pipeline cannot continue" % "; ".join(dead))
      raise self._error
    if self.stall_seconds:
      self._check_stalls()

  def _check_stalls(self):
    now = time.monotonic()
    gap = min(now - self._last_check, _MAX_CHECK_GAP)
    self._last_check = now
    for wid, proc in enumerate(self._procs):
      stamp = float(self._stamps[wid])
      if stamp == 0.0 or stamp != self._seen[wid]:
        self._seen[wid], self._stuck[wid] = stamp, 0.0
        continue
      self._stuck[wid] += gap
      if self._stuck[wid] > self.stall_seconds:
        where = _read_current(self._current[wid])
        self._error = WorkerStalledError(
            "input worker %d (pid %d) has made no progress for %.0f s %s (the input timeout is %g s): a hung file "
            "system or a read that blocks; the input pipeline stops here" %
            (wid, proc.pid, self._stuck[wid], "reading %s" % quote(where) if where else "on its batch",
             self.stall_seconds))
        raise self._error

  def _check_lost(self):
    """Called while no result arrives: raises BatchLostError once batches are outstanding, every worker idle and
    the task queue empty for _LOST_SECONDS of the parent's own waiting."""
    now = time.monotonic()
    gap = min(now - self._last_idle_check, _MAX_CHECK_GAP)
    self._last_idle_check = now
    try:
      queued = self._tasks.qsize()
    except NotImplementedError:  # no sem_getvalue (macOS): the check cannot tell queued from lost
      return
    if self._outstanding <= 0 or queued > 0 or np.any(self._stamps != 0.0):
      self._idle_waiting = 0.0
      return
    self._idle_waiting += gap
    if self._idle_waiting > _LOST_SECONDS:
      self._error = BatchLostError(
          "input pipeline: %d batch(es) were sent to the workers and never came back, with every worker idle and "
          "nothing queued for %.0f s (a message lost between the processes); the input pipeline stops here" %
          (self._outstanding, self._idle_waiting))
      raise self._error

  def get_result(self):
    """The next result tuple (kind, gen, batch_id, slot, (final, partner_final), skips).

    Raises WorkerDiedError if a worker died, WorkerStalledError if one stalled, BatchLostError if batches went
    missing, UnreadableDatasetError if a worker met only bad files, RuntimeError (with the worker's traceback) for
    any other exception in a worker.
    """
    self._check_usable()
    # Checked on every call, not only when the queue runs dry: the other workers may keep the queue busy
    # while the batch a dead worker held never arrives.
    self._check_workers()
    self._last_idle_check = time.monotonic()
    self._idle_waiting = 0.0
    while True:
      try:
        result = self._results.get(timeout=_POLL_SECONDS)
      except queue.Empty:
        self._check_workers()
        self._check_lost()
        continue
      self._outstanding -= 1
      if result[0] == "unreadable":
        self._error = UnreadableDatasetError(result[5])
        raise self._error
      if result[0] == "error":
        self._error = RuntimeError("input worker %d failed on batch %d:\n%s" % (result[4], result[2], result[5]))
        raise self._error
      return result

  def close(self):
    """Stops the workers (politely, then by force) and releases the queues; safe to call more than once."""
    if self._closed:
      return
    self._closed = True
    self._generation.value += 1
    # One stop sentinel per live worker only: a sentinel nobody reads would still be in the queue's feeder thread
    # when close() shuts the pipe below, and that thread prints a BrokenPipeError traceback.
    for _ in [p for p in self._procs if p.is_alive()]:
      try:
        self._tasks.put_nowait(None)
      except Exception:
        pass
    deadline = time.time() + 2.0
    for proc in self._procs:
      proc.join(max(0.0, deadline - time.time()))
    for proc in self._procs:
      if proc.is_alive():
        proc.terminate()
        proc.join(1.0)
      if proc.is_alive():
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(1.0)
    for q in (self._tasks, self._results):
      q.cancel_join_thread()  # never block interpreter exit on a feeder thread
      q.close()
    _live_pools.discard(self)
