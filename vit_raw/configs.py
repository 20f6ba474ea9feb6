"""The official ViT variants: patch size and transformer shape of each published model."""
import collections

from vit_raw.errors import ModelError

ViTConfig = collections.namedtuple("ViTConfig",
                                   ["name", "patch_size", "hidden_size", "num_layers", "num_heads", "mlp_dim", "stem"],
                                   defaults=("patch",))
ViTConfig.__doc__ = """Shape of one ViT.

Attributes:
  name: canonical name, e.g. "ViT-B/16".
  patch_size: side of the square patch in pixels.
  hidden_size: token width D.
  num_layers: number of encoder blocks.
  num_heads: attention heads; hidden_size must be divisible by it.
  mlp_dim: width of the MLP inside each block.
  stem: how pixels become tokens: "patch", the official linear patch embedding (a stride-p p x p convolution), or
    "conv", a convolutional stem (log2(p) 3x3 stride-2 convolutions, each with a layer norm over its channels and a
    ReLU, then a 1x1 projection to the token width; Xiao et al. 2021, "Early convolutions help transformers see
    better"), which official checkpoints do not have.
"""

STEMS = ("patch", "conv")

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

# The digits recipe's model (the trainer's default): 16 tokens of 4x4 patches on 16x16 (8x8 upscaled) digits.
TINY = ViTConfig("tiny", 4, 64, 4, 4, 128)


def _key(name):
  """Normalises "ViT-B/16", "vit-b_16", "B/16", "b_16" to "b/16"."""
  key = name.strip().lower().replace("_", "/")
  if key.startswith("vit-"):
    key = key[len("vit-"):]
  return key


_BY_KEY = {_key(n): c for n, c in CONFIGS.items()}
_BY_KEY["tiny"] = TINY

SHAPE_FIELDS = ("patch_size", "hidden_size", "num_layers", "num_heads", "mlp_dim")
CONFIG_FIELDS = SHAPE_FIELDS + ("stem",)  # everything a run can override of a named model


def get_config(name, **overrides):
  """Returns the ViTConfig of a published variant or "tiny", with optional overrides (CONFIG_FIELDS: the shape
  fields and the stem; None leaves a field as it is). Accepts "ViT-B/16", "ViT-B_16", "B/16", "B_16" in any case.
  Raises ValueError with one line for an unknown name or a shape that cannot be built."""
  config = name if isinstance(name, ViTConfig) else _BY_KEY.get(_key(str(name)))
  if config is None:
    raise ModelError("unknown model %r; known models: tiny, %s" % (name, ", ".join(MODEL_NAMES)))
  unknown = set(overrides) - set(CONFIG_FIELDS)
  if unknown:
    raise ModelError("unknown shape field(s) %s; expected %s" % (", ".join(sorted(unknown)), ", ".join(CONFIG_FIELDS)))
  stem = overrides.pop("stem", None)
  given = {k: int(v) for k, v in overrides.items() if v is not None}
  for key, value in given.items():
    if value <= 0:
      raise ModelError("--%s must be positive, got %d" % (key, value))
  if stem is not None:
    if stem not in STEMS:
      raise ModelError("--stem=%s: expected one of %s" % (stem, ", ".join(STEMS)))
    given["stem"] = stem
  config = config._replace(**given)
  if config.hidden_size % config.num_heads:
    raise ModelError("hidden size %d of %s is not divisible by %d heads" %
                     (config.hidden_size, config.name, config.num_heads))
  if config.stem == "conv" and not _conv_stem_fits(config):
    raise ModelError(
        "--stem=conv halves the image once per stride-2 convolution, so it needs a patch size that is a "
        "power of 2 (2, 4, 8, 16, ...) and a hidden size divisible by half of it; %s has patch %d, hidden %d" %
        (config.name, config.patch_size, config.hidden_size))
  return config


def _conv_stem_fits(config):
  p = config.patch_size
  return p >= 2 and p & (p - 1) == 0 and config.hidden_size % (p // 2) == 0


def conv_stem_widths(config):
  """Output channels of the conv stem's stride-2 convolutions: doubling up to the hidden size, e.g. [64, 128] for
  patch 4 and width 128, [96, 192, 384, 768] for ViT-B/16."""
  n = config.patch_size.bit_length() - 1
  return [config.hidden_size >> (n - 1 - i) for i in range(n)]


def family_of_hidden(hidden_size):
  """Name of the family ("ViT-B") whose hidden size is `hidden_size`, or None; used in error messages."""
  for family, shape in _FAMILIES.items():
    if shape[0] == hidden_size:
      return "ViT-" + family
  return None


def image_hw(size):
  """(height, width) of an image size given as one int (square) or a (height, width) pair."""
  if isinstance(size, (tuple, list)):
    return int(size[0]), int(size[1])
  return int(size), int(size)
