"""The launch layer's errors: one family, two kinds a user tells apart by the exit code.

  UsageError (exit 2)   the command line or the run folder is wrong: nothing was trained; the message names the flag
                        or path and what was expected. FlagError is its name in launch.flags.
  RunStopped (exit 1)   the run started but cannot go on (the loss diverged, an input pipeline failed, a rank was
                        lost or disagrees); checkpoints written so far are intact. TrainingStopped is its name in
                        launch.callbacks.
Anything else that escapes the trainer is a bug and keeps its traceback. A signal is not an error:
launch.interrupts.Interrupted (exit 128 + signal).
"""


class LaunchError(Exception):
  """Base of the launch layer's errors; the message is the one line the user sees."""


class UsageError(LaunchError, ValueError):
  """A bad flag value or combination, or a run folder that cannot be used (exit code 2)."""


class RunStopped(LaunchError, RuntimeError):
  """The run cannot usefully go on (exit code 1)."""


class InputFailed(RunStopped):
  """An input pipeline stopped the run (a worker died, a dataset turned out unreadable)."""
