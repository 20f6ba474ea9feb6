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


def table_header(columns):
  """The two header lines of a Markdown table with these column titles."""
  return ["| %s |" % " | ".join(columns), "|%s" % ("---|" * len(columns))]


def table_row(cells):
  """One Markdown table row of already formatted cells."""
  return "| %s |" % " | ".join(str(c) for c in cells)


def print_lines(lines, out=None):
  """Prints lines and flushes at once, so that a long benchmark shows each row as it is measured."""
  out = out or sys.stdout
  for line in lines:
    out.write(line + "\n")
  out.flush()


def peak_rss_mb():
  """Peak resident memory of this process so far, in MB (ru_maxrss is in KiB on Linux)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
