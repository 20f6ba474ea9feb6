"""The input layer's errors: every bad dataset, file or option is an InputError (a ValueError) with one line naming
the thing and what was expected. Tools and the trainer report these as usage errors (exit 2); a plain ValueError
from elsewhere is a bug and keeps its traceback."""


class InputError(ValueError):
  """Base of the input layer's errors."""


class DataError(InputError):
  """A dataset folder, list or file that does not hold what its reader expects."""
