"""The variables vit_raw.model.vit creates, without TensorFlow: their names and shapes, the layer each belongs to
for layer-wise lr decay, and which are exempt from weight decay.

Names are relative to the model scope ("vit"); the functions that take a name also accept it with the scope in
front (a variable's op.name) or with an output suffix (":0").
"""
import re

from vit_raw import configs

# The last name component of every model weight; optimizer slots (".../kernel/Adam", ".../Momentum") end otherwise.
WEIGHT_LEAVES = ("kernel", "bias", "scale", "cls", "pos_embedding")
# Tensors of more than one dimension that timm/DeiT still exclude from weight decay (`no_weight_decay()`).
_NO_DECAY_NAMES = ("cls", "pos_embedding")
_EMBEDDING_NAMES = ("embedding", "cls", "pos_embedding")  # layer 0
_TOP_NAMES = ("encoder_norm", "pre_logits", "head")  # layer num_layers + 1
_BLOCK_RE = re.compile(r"^encoderblock_(\d+)/")
_STEM_RE = re.compile(r"^stem_\d+$")  # the conv stem's layers (configs.STEMS), layer 0 with the embedding


def num_tokens(config, image_size):
  """Tokens per image (patches + class token) for an int or (height, width) image size."""
  h, w = configs.image_hw(image_size)
  return (h // config.patch_size) * (w // config.patch_size) + 1


def variable_shapes(config, num_classes, image_size, representation_size=None):
  """Ordered {name relative to the scope: shape} of every variable vit(...) creates."""
  p, d, m = config.patch_size, config.hidden_size, config.mlp_dim
  shapes = stem_shapes(config) + [("cls", (1, 1, d)), ("pos_embedding", (1, num_tokens(config, image_size), d))]
  for i in range(config.num_layers):
    b = "encoderblock_%d/" % i
    shapes += [(b + "ln_attn/scale", (d,)), (b + "ln_attn/bias", (d,)), (b + "attention/qkv/kernel", (d, 3 * d)),
               (b + "attention/qkv/bias", (3 * d,)), (b + "attention/out/kernel", (d, d)),
               (b + "attention/out/bias", (d,)), (b + "ln_mlp/scale", (d,)), (b + "ln_mlp/bias", (d,)),
               (b + "mlp/dense_0/kernel", (d, m)), (b + "mlp/dense_0/bias", (m,)), (b + "mlp/dense_1/kernel", (m, d)),
               (b + "mlp/dense_1/bias", (d,))]
  shapes += [("encoder_norm/scale", (d,)), ("encoder_norm/bias", (d,))]
  width = d
  if representation_size:
    shapes += [("pre_logits/kernel", (d, representation_size)), ("pre_logits/bias", (representation_size,))]
    width = representation_size
  shapes += [("head/kernel", (width, num_classes)), ("head/bias", (num_classes,))]
  return dict(shapes)


def stem_shapes(config, channels=3):
  """[(name, shape)] of the variables that turn pixels into tokens: the patch embedding's [p,p,3,D] kernel, or the
  conv stem's 3x3 kernels (no bias: a layer norm follows each) and norms, then the 1x1 projection embedding/."""
  d = config.hidden_size
  if config.stem == "patch":
    p = config.patch_size
    return [("embedding/kernel", (p, p, channels, d)), ("embedding/bias", (d,))]
  shapes, cin = [], channels
  for i, width in enumerate(configs.conv_stem_widths(config)):
    shapes += [("stem_%d/kernel" % i, (3, 3, cin, width)), ("stem_%d/norm/scale" % i, (width,)),
               ("stem_%d/norm/bias" % i, (width,))]
    cin = width
  return shapes + [("embedding/kernel", (1, 1, cin, d)), ("embedding/bias", (d,))]


def relative_name(name, scope="vit"):
  """`name` without a leading "`scope`/" and a trailing ":0"."""
  name = re.sub(r":\d+$", "", name)
  head = scope.rstrip("/") + "/"
  return name[len(head):] if name.startswith(head) else name


def layer_id(name, num_layers, scope="vit"):
  """The layer of a model variable for layer-wise lr decay, in the BEiT/MAE convention.

  Patch embedding (or conv stem), class token and position embedding are layer 0, encoder block i is layer i + 1,
  the final norm, pre_logits and the head are layer num_layers + 1 (so a decay factor d scales block i's lr by
  d ** (num_layers - i) and leaves the head's alone). ValueError for a name that is not one of the model's.
  """
  relative = relative_name(name, scope)
  root = relative.split("/")[0]
  match = _BLOCK_RE.match(relative)
  if match and int(match.group(1)) < num_layers:
    return int(match.group(1)) + 1
  if root in _EMBEDDING_NAMES or _STEM_RE.match(root):
    return 0
  if root in _TOP_NAMES:
    return num_layers + 1
  raise ValueError("%s is not a variable of a %d-block vit_raw model (expected stem_i/, embedding/, cls, "
                   "pos_embedding, encoderblock_0..%d/, encoder_norm/, pre_logits/ or head/ under scope %r)" %
                   (name, num_layers, num_layers - 1, scope))


def exempt_from_weight_decay(name, shape, scope="vit"):
  """Whether timm/DeiT's rule leaves this variable out of weight decay: every tensor of at most one dimension
  (biases, layer-norm scales and offsets) and the class token and position embedding."""
  return len(shape) <= 1 or relative_name(name, scope) in _NO_DECAY_NAMES
