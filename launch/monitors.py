"""Where a run's records go: the console and train.log (text lines), metrics.jsonl, and TensorBoard.

Every record (launch/metrics.py) is put once to `Monitors`, which hands it to each writer, so the console, the
JSON file that tools read and TensorBoard always show the same numbers (tensorpack's monitors). A file that cannot be
written (a full disk, a read-only or vanished folder) stops the run with one launch.storage.StorageFailed line; the
console goes on showing every record.
"""
import logging as py_logging
import logging.handlers  # pylint: disable=unused-import
import math
import os
import socket
import sys
import time

from absl import logging
import tensorflow.compat.v1 as tf

from launch import log_format
from launch import metrics
from launch import storage

LOG_FILE = "train.log"
# Loggers whose records reach the console and train.log besides absl's: the input pipeline's warnings.
EXTRA_LOGGERS = ("input",)


class CompactFormatter(py_logging.Formatter):
  """`HH:MM:SS message` for the console (warnings and errors keep their level); train.log keeps absl's prefix."""

  def format(self, record):
    text = record.getMessage()
    stamp = self.formatTime(record, "%H:%M:%S")
    if record.levelno >= py_logging.WARNING:
      return "%s %s: %s" % (stamp, record.levelname, text)
    return "%s %s" % (stamp, text)


def use_compact_console():
  """The console shows `HH:MM:SS message` lines instead of absl's ~60-character prefix (train.log keeps it)."""
  logging.get_absl_handler().python_handler.setFormatter(CompactFormatter())


class RunLog(object):
  """For the life of a run: absl's and the input pipeline's records go to <model_dir>/train.log (absl's full
  prefix) as well as to the console.

  Records are held in memory until `start_file()`, so that what happens before the run decides to write (opening
  the datasets, finding a finished run) reaches train.log when it does, and nothing is written when it does not.
  """

  def __init__(self, model_dir):
    self.path = os.path.join(model_dir, LOG_FILE)
    self._file = None
    self._buffer = py_logging.handlers.MemoryHandler(capacity=10**6, flushLevel=py_logging.CRITICAL + 1)
    self._loggers = [logging.get_absl_logger()] + [py_logging.getLogger(name) for name in EXTRA_LOGGERS]
    for logger in self._loggers:
      logger.addHandler(self._buffer)
    self._console = None
    absl_handler = logging.get_absl_handler()
    for name in EXTRA_LOGGERS:
      logger = py_logging.getLogger(name)
      logger.setLevel(py_logging.INFO)
      if absl_handler not in py_logging.getLogger().handlers:
        # Outside absl's app.run nothing prints the input's records to the console: give them a handler.
        self._console = self._console or _stderr_handler()
        logger.addHandler(self._console)
        logger.propagate = False
    logging.set_verbosity(logging.INFO)

  def start_file(self):
    """Opens train.log (appending), writes the records held so far, and sends every later record there."""
    directory = os.path.dirname(self.path)
    if directory and not os.path.isdir(directory):
      os.makedirs(directory)
    self._file = _FileHandler(self.path)
    self._file.setFormatter(logging.PythonFormatter())
    self._buffer.setTarget(self._file)
    self._buffer.flush()
    for logger in self._loggers:
      logger.removeHandler(self._buffer)
      logger.addHandler(self._file)

  def close(self):
    for logger in self._loggers:
      for handler in (self._buffer, self._file, self._console):
        if handler is not None:
          logger.removeHandler(handler)
    for name in EXTRA_LOGGERS:
      py_logging.getLogger(name).propagate = True
    self._buffer.setTarget(None)
    self._buffer.close()
    if self._file is not None:
      try:
        self._file.close()
      except OSError:  # the write that failed was reported already (failure)
        pass

  @property
  def failure(self):
    """The OSError that stopped train.log being written, or None."""
    return self._file.failure if self._file is not None else None


class _FileHandler(py_logging.FileHandler):
  """train.log: after a write fails (a full disk) it keeps the error in `failure` and writes nothing more, instead
  of printing logging's own traceback for every later record; the run reads `failure` after every loop."""
  failure = None

  def emit(self, record):
    if self.failure is None:
      super(_FileHandler, self).emit(record)

  def handleError(self, record):
    error = sys.exc_info()[1]
    if isinstance(error, OSError):
      self.failure = error
    else:
      super(_FileHandler, self).handleError(record)


def _stderr_handler():
  handler = py_logging.StreamHandler()
  handler.setFormatter(CompactFormatter())
  return handler


class ConsoleMonitor(object):
  """Writes each record as its text line through absl logging (so to the console and train.log)."""
  what = "the console"

  def write(self, record):
    kind = record["event"]
    if kind == "train":
      logging.info(log_format.train_line(record))
    elif kind == "eval":
      logging.info(log_format.eval_line(record))
    elif kind == "summary":
      logging.info(log_format.summary_line(record))
    elif kind == "run":
      logging.info(log_format.RUN_PREFIX + record["text"])

  def close(self):
    pass


class EventFile(object):
  """A TensorBoard event file written in the calling thread, one flushed record per event (tf.summary.FileWriter
  writes from a thread of its own, which on a full disk loses events silently on TF 1.15 and dies with a
  traceback on TF 2.x; a TFRecord file of Event protos is all TensorBoard reads)."""

  def __init__(self, log_dir, graph=None):
    name = "events.out.tfevents.%010d.%s" % (int(time.time()), socket.gethostname())
    self.path = os.path.join(log_dir, name)
    self._records = tf.io.TFRecordWriter(self.path)
    self.add_event(tf.Event(file_version="brain.Event:2"))
    if graph is not None:
      self.add_event(tf.Event(graph_def=graph.as_graph_def(add_shapes=True).SerializeToString()))

  def add_event(self, event):
    if not event.wall_time:
      event.wall_time = time.time()
    self._records.write(event.SerializeToString())
    self._records.flush()

  def add_summary(self, summary, step):
    self.add_event(tf.Event(step=int(step), summary=summary))

  def close(self):
    self._records.close()


class TensorBoardMonitor(object):
  """Scalars of train and eval records, and the run's flags as text (no summary ops in the graph, so nothing runs
  inside the training loop)."""
  what = "TensorBoard events"
  SCALARS = {
      "train": ("loss", "lr", "img_per_sec", "loss_scale", "skipped"),
      "eval": ("top1", "top5", "ema_top1", "ema_top5", "hflip_top1", "hflip_top5", "ema_hflip_top1", "ema_hflip_top5"),
  }

  def __init__(self, log_dir, graph=None):
    self.writer = EventFile(log_dir, graph)

  def write(self, record):
    names = self.SCALARS.get(record["event"], ())
    values = [
        tf.Summary.Value(tag=name, simple_value=float(record[name]))
        for name in names
        if name in record and not (isinstance(record[name], float) and math.isnan(record[name]))
    ]
    if values:
      self.writer.add_summary(tf.Summary(value=values), record["step"])
    if record["event"] == "run" and "flags" in record:
      self.text("flags", "\n\n".join("    " + line for line in record["flags"]), record["step"])

  def text(self, tag, text, step):
    """A text summary (shown in TensorBoard's Text tab), written from Python like the scalars."""
    metadata = tf.SummaryMetadata(plugin_data=tf.SummaryMetadata.PluginData(plugin_name="text"))
    value = tf.Summary.Value(tag=tag, metadata=metadata, tensor=tf.make_tensor_proto(text))
    self.writer.add_summary(tf.Summary(value=[value]), step)

  def close(self):
    self.writer.close()


class Monitors(object):
  """Puts each record to every writer; `rank0` writers (files shared by the run) only exist on rank 0.

  A writer whose file cannot be written is dropped and the put raises launch.storage.StorageFailed naming it (the
  console has the record already: it comes first); so does `check` once the run's train.log failed.

  Attributes:
    writers: the writers still writing (each with `what` it writes, `write(record)` and `close()`).
    model_dir: the run folder, named in the error line.
    run_log: the RunLog writing train.log (None when this process writes none).
  """

  def __init__(self, writers, model_dir=".", run_log=None):
    self.writers = list(writers)
    self.model_dir, self.run_log = model_dir, run_log
    self._log_reported = False

  def put(self, record):
    for writer in list(self.writers):
      try:
        writer.write(record)
      except (OSError, tf.errors.OpError) as e:
        self._drop(writer, e)
    self.check()

  def check(self):
    """Raises StorageFailed once when train.log could not be written."""
    error = self.run_log.failure if self.run_log is not None else None
    if error is not None and not self._log_reported:
      self._log_reported = True
      raise storage.failure(error, LOG_FILE, self.model_dir) or error

  def _drop(self, writer, error):
    self.writers.remove(writer)
    try:
      writer.close()
    except (OSError, tf.errors.OpError):
      pass
    failed = storage.failure(error, writer.what, self.model_dir)
    if failed is None:
      raise error
    raise failed from None

  def close(self):
    """Closes every writer; a failure here is only logged, so that it never hides the error that ends a run."""
    for writer in self.writers:
      try:
        writer.close()
      except (OSError, tf.errors.OpError) as e:
        logging.warning("could not close %s in %s: %s", writer.what, self.model_dir, e)


def make_monitors(model_dir, graph, rank, run_log=None):
  """Console on every rank; metrics.jsonl and TensorBoard from rank 0 only."""
  writers = [ConsoleMonitor()]
  if rank == 0:
    try:
      writers += [
          metrics.JsonlWriter(os.path.join(model_dir, metrics.METRICS_FILE)),
          TensorBoardMonitor(model_dir, graph)
      ]
    except (OSError, tf.errors.OpError) as e:
      raise storage.failure(e, "metrics.jsonl and TensorBoard events", model_dir) or e
  return Monitors(writers, model_dir, run_log)
