"""The model layer's errors: an unknown variant, a shape that does not fit, a checkpoint of another model. Each is a
ModelError (a ValueError) with one line naming the thing and what was expected."""


class ModelError(ValueError):
  """Base of the model layer's errors."""
