"""The official ViT variants: patch size and transformer shape of each published model."""
import collections

ViTConfig = collections.namedtuple("ViTConfig",
                                   ["name", "patch_size", "hidden_size", "num_layers", "num_heads", "mlp_dim"])
ViTConfig.__doc__ = """Shape of one ViT.

Attributes:
  name: canonical name, e.g. "ViT-B/16".
  patch_size: side of the square patch in pixels.
  hidden_size: token width D.
  num_layers: number of encoder blocks.
  num_heads: attention heads; hidden_size must be divisible by it.
  mlp_dim: width of the MLP inside each block.
"""

# (hidden, layers, heads, mlp) per family, Table 1 of the ViT paper plus Ti/S from "How to train your ViT".
_FAMILIES = {
    "Ti": (192, 12, 3, 768),
    "S": (384, 12, 6, 1536),
    "B": (768, 12, 12, 3072),
    "L": (1024, 24, 16, 4096),
    "H": (1280, 32, 16, 5120),
}
_PUBLISHED = (("Ti", 16), ("S", 16), ("S", 32), ("B", 16), ("B", 32), ("B", 8), ("L", 16), ("L", 32), ("H", 14))


def _make(family, patch):
  hidden, layers, heads, mlp = _FAMILIES[family]
  return ViTConfig("ViT-%s/%d" % (family, patch), patch, hidden, layers, heads, mlp)


CONFIGS = collections.OrderedDict((c.name, c) for c in (_make(f, p) for f, p in _PUBLISHED))
MODEL_NAMES = tuple(CONFIGS)


def _key(name):
  """Normalises "ViT-B/16", "vit-b_16", "B/16", "b_16" to "b/16"."""
  key = name.strip().lower().replace("_", "/")
  if key.startswith("vit-"):
    key = key[len("vit-"):]
  return key


_BY_KEY = {_key(n): c for n, c in CONFIGS.items()}


def get_config(name):
  """Returns the ViTConfig of a published variant; accepts "ViT-B/16", "ViT-B_16", "B/16", "B_16" in any case."""
  if isinstance(name, ViTConfig):
    return name
  config = _BY_KEY.get(_key(str(name)))
  if config is None:
    raise ValueError("unknown model %r; known models: %s" % (name, ", ".join(MODEL_NAMES)))
  return config


def tiny_config(patch_size=4, hidden_size=16, num_layers=2, num_heads=2, mlp_dim=32, name="ViT-tiny"):
  """A small ViTConfig for tests and smoke runs."""
  return ViTConfig(name, patch_size, hidden_size, num_layers, num_heads, mlp_dim)


def family_of_hidden(hidden_size):
  """Name of the family ("ViT-B") whose hidden size is `hidden_size`, or None; used in error messages."""
  for family, shape in _FAMILIES.items():
    if shape[0] == hidden_size:
      return "ViT-" + family
  return None
