"""Ctrl-C and SIGTERM during training: stop at the next loop boundary with a checkpoint, never a traceback.

The first SIGINT or SIGTERM only asks the loop to stop: Python runs signal handlers between bytecodes, so a
sess.run in progress (up to --iterations_per_loop steps) finishes first; then the run checkpoints exactly that
step and exits with 128 + the signal (130 for SIGINT, 143 for SIGTERM). The handler also restores the default
action, so a second signal ends the process at once; the input workers die with it (they hold
PR_SET_PDEATHSIG(SIGKILL), and their shared memory is anonymous), so nothing outlives the run either way. With
several ranks the loop asks every rank after each sess.run whether any of them was signalled (one small
all-reduce), so all ranks stop after the same step.
"""
import signal

from absl import logging

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
  """The run was asked to stop by a signal and stopped at a loop boundary.

  Attributes:
    signum: the signal (signal.SIGINT or SIGTERM); step: the global step the run stopped at.
    checkpoint: the checkpoint written for that step (set once it is written), or None.
  """

  def __init__(self, signum, step):
    super(Interrupted, self).__init__("interrupted at step %d (%s)" % (step, signal.Signals(signum).name))
    self.signum, self.step = signum, step
    self.checkpoint = None

  @property
  def exit_code(self):
    return 128 + int(self.signum)


class StopRequests(object):
  """While entered, SIGINT and SIGTERM set `signum` instead of stopping the process (the first one only).

  Attributes:
    signum: the first signal received, or None.
    loop_hint: text saying how long the current sess.run may still take (set by the loop).
  """

  def __init__(self, loop_hint=""):
    self.signum = None
    self.loop_hint = loop_hint
    self._previous = {}
    self._announced = False

  def __enter__(self):
    for signum in SIGNALS:
      try:
        self._previous[signum] = signal.signal(signum, self._handle)
      except ValueError:  # not the main thread (an embedding program): signals keep their own handlers
        pass
    return self

  def _handle(self, signum, frame):
    # No logging here: Python runs this handler between two bytecodes of the main thread, possibly inside a
    # logging call, and a nested write to the same buffered stream raises (Python 3.11: "reentrant call").
    del frame
    self.signum = signum
    for other in self._previous:
      signal.signal(other, signal.SIG_DFL)  # a second signal ends the process at once

  def announce(self):
    """Logs, once, that a signal came and what happens next; True when one came. Called by the loop."""
    if self.signum is not None and not self._announced:
      self._announced = True
      logging.warning(
          "%s: stopping after the current sess.run%s, then writing a checkpoint; send it again to stop at once "
          "(losing the steps since the last checkpoint)",
          signal.Signals(self.signum).name, self.loop_hint)
    return self.signum is not None

  def __exit__(self, *exc):
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)
    self._previous = {}
