"""What the benchmark commands share: timing calls, the machine and "timed:" lines, Markdown tables, peak memory.

Every benchmark prints what it timed and on what machine next to its numbers, so that a number copied into
docs/benchmarks.md keeps its context; the lines are built here so that they read the same in every command.
"""
import os
import platform
import resource
import sys
import time


def seconds(fn, calls=1):
  """Wall seconds of `calls` back-to-back calls of fn(), timed as one interval (monotonic clock)."""
  start = time.perf_counter()
  for _ in range(calls):
    fn()
  return time.perf_counter() - start


def seconds_each(fn, runs, warmup=0):
  """Seconds of each of `runs` calls of fn(), after `warmup` untimed calls."""
  for _ in range(warmup):
    fn()
  return [seconds(fn) for _ in range(runs)]


def cpu_name(path="/proc/cpuinfo"):
  """The CPU's model name (the first "model name" line of /proc/cpuinfo), else platform's guess."""
  try:
    with open(path) as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except IOError:
    pass
  return platform.processor() or "unknown CPU"


def visible_cores():
  """Cores this process may run on (its CPU set where the OS tells it, else the machine's count)."""
  if hasattr(os, "sched_getaffinity"):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 0


def machine_line(*libraries):
  """One line: the CPU, the cores visible, each (name, version) of `libraries` and the Python version."""
  parts = ["%s %s" % (name, version) for name, version in libraries]
  return "machine: %s, %d cores visible, %s" % (cpu_name(), visible_cores(),
                                                ", ".join(parts + ["Python %s" % sys.version.split()[0]]))


def kernels_text(model_plan):
  """The kernel choice of a launch.plan model plan as the benchmarks print it: "kernels X, lean backward Y"."""
  return "kernels %s, lean backward %s" % (model_plan.kernels, ",".join(model_plan.lean_backward) or "none")


def timed_line(what):
  """The line that says what a benchmark times (the graph it runs, its shape and kernels)."""
  return "timed: %s" % what


class Table(object):
  """A Markdown table printed as it is measured: the header first, then each row as soon as its numbers are known
  (a long benchmark shows its rows one by one, and an interrupted one keeps what it printed).

  Attributes:
    columns: (title, format) of each column, e.g. ("img/s", "%.0f").
    out: the stream written to (None: sys.stdout at the time of each write).
  """

  def __init__(self, columns, out=None):
    self.columns = list(columns)
    self.out = out

  def header(self):
    titles = [title for title, _ in self.columns]
    self._write(["| %s |" % " | ".join(titles), "|%s" % ("---|" * len(titles))])

  def row(self, *values):
    if len(values) != len(self.columns):
      raise ValueError("a row of %d values for %d columns" % (len(values), len(self.columns)))
    self._write(["| %s |" % " | ".join(fmt % value for (_, fmt), value in zip(self.columns, values))])

  def _write(self, lines):
    out = self.out or sys.stdout
    for line in lines:
      out.write(line + "\n")
    out.flush()


def peak_rss_mb():
  """Peak resident memory of this process so far, in MB (ru_maxrss is in KiB on Linux)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
