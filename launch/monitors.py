"""Where a run's records go: the console and train.log (text lines), metrics.jsonl, and TensorBoard.

Every record (launch/metrics.py) is put once to `Monitors`, which hands it to each writer, so the console, the
JSON file that tools read and TensorBoard always show the same numbers (tensorpack's monitors).
"""
import logging as py_logging
import logging.handlers  # pylint: disable=unused-import
import math
import os

from absl import logging
import tensorflow.compat.v1 as tf

from launch import log_format
from launch import metrics

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
    self._file = py_logging.FileHandler(self.path)
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
      self._file.close()


def _stderr_handler():
  handler = py_logging.StreamHandler()
  handler.setFormatter(CompactFormatter())
  return handler


class ConsoleMonitor(object):
  """Writes each record as its text line through absl logging (so to the console and train.log)."""

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


class TensorBoardMonitor(object):
  """Scalars of train and eval records, and the run's flags as text (no summary ops in the graph, so nothing runs
  inside the training loop)."""
  SCALARS = {
      "train": ("loss", "lr", "img_per_sec", "loss_scale", "skipped"),
      "eval": ("top1", "top5", "ema_top1", "ema_top5"),
  }

  def __init__(self, log_dir, graph=None):
    self.writer = tf.summary.FileWriter(log_dir, graph)

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
    self.writer.flush()
    self.writer.close()


class Monitors(object):
  """Puts each record to every writer; `rank0` writers (files shared by the run) only exist on rank 0."""

  def __init__(self, writers):
    self.writers = list(writers)

  def put(self, record):
    for writer in self.writers:
      writer.write(record)

  def close(self):
    for writer in self.writers:
      writer.close()


def make_monitors(model_dir, graph, rank):
  """Console on every rank; metrics.jsonl and TensorBoard from rank 0 only."""
  writers = [ConsoleMonitor()]
  if rank == 0:
    writers += [
        metrics.JsonlWriter(os.path.join(model_dir, metrics.METRICS_FILE)),
        TensorBoardMonitor(model_dir, graph)
    ]
  return Monitors(writers)
