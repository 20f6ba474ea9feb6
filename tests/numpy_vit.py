"""An independent NumPy ViT forward on official-layout weights (flax semantics), the reference the tests compare to."""
import math

import numpy as np


def _layer_norm(x, scale, bias, eps=1e-6):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean)**2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * scale + bias


def _gelu(x, exact):
  if exact:
    from scipy.special import erf  # pylint: disable=g-import-not-at-top
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))
  return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def forward(params, images, patch, num_heads, exact_gelu=False):
  """Logits [B, classes] of images [B,H,W,3] in float64 from official original-layout `params`."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  b, h, w, c = images.shape
  gh, gw = h // patch, w // patch
  x = np.asarray(images, np.float64).reshape(b, gh, patch, gw, patch, c)
  # The stride-p VALID convolution written out: every output pixel sums one patch times the kernel.
  x = np.einsum("bipjqc,pqcd->bijd", x, p["embedding/kernel"]) + p["embedding/bias"]
  x = x.reshape(b, gh * gw, -1)
  cls = np.broadcast_to(p["cls"], (b, 1, x.shape[-1]))
  x = np.concatenate([cls, x], axis=1) + p["Transformer/posembed_input/pos_embedding"]
  layer = 0
  while "Transformer/encoderblock_%d/LayerNorm_0/scale" % layer in p:
    pre = "Transformer/encoderblock_%d/" % layer
    att = pre + "MultiHeadDotProductAttention_1/"
    y = _layer_norm(x, p[pre + "LayerNorm_0/scale"], p[pre + "LayerNorm_0/bias"])
    q, k, v = [
        np.einsum("btd,dhk->bthk", y, p[att + n + "/kernel"]) + p[att + n + "/bias"] for n in ("query", "key", "value")
    ]
    head_dim = q.shape[-1]
    weights = _softmax(np.einsum("bqhk,bthk->bhqt", q, k) / math.sqrt(head_dim))
    y = np.einsum("bhqt,bthk->bqhk", weights, v)
    y = np.einsum("bqhk,hkd->bqd", y, p[att + "out/kernel"]) + p[att + "out/bias"]
    x = x + y
    y = _layer_norm(x, p[pre + "LayerNorm_2/scale"], p[pre + "LayerNorm_2/bias"])
    y = _gelu(y @ p[pre + "MlpBlock_3/Dense_0/kernel"] + p[pre + "MlpBlock_3/Dense_0/bias"], exact_gelu)
    x = x + y @ p[pre + "MlpBlock_3/Dense_1/kernel"] + p[pre + "MlpBlock_3/Dense_1/bias"]
    layer += 1
  x = _layer_norm(x, p["Transformer/encoder_norm/scale"], p["Transformer/encoder_norm/bias"])[:, 0]
  if "pre_logits/kernel" in p:
    x = np.tanh(x @ p["pre_logits/kernel"] + p["pre_logits/bias"])
  return x @ p["head/kernel"] + p["head/bias"]


def random_official_params(hidden, layers, heads, mlp, patch, tokens, num_classes, representation=None, seed=0,
                           scale=0.3):
  """Random weights in the official original layout (non-zero head, so logits depend on everything)."""
  rng = np.random.RandomState(seed)
  hd = hidden // heads

  def r(*shape):
    return (rng.randn(*shape) * scale).astype(np.float32)

  params = {
      "embedding/kernel": r(patch, patch, 3, hidden),
      "embedding/bias": r(hidden),
      "cls": r(1, 1, hidden),
      "Transformer/posembed_input/pos_embedding": r(1, tokens, hidden),
      "Transformer/encoder_norm/scale": 1 + r(hidden),
      "Transformer/encoder_norm/bias": r(hidden)
  }
  for i in range(layers):
    pre = "Transformer/encoderblock_%d/" % i
    att = pre + "MultiHeadDotProductAttention_1/"
    for n in ("query", "key", "value"):
      params[att + n + "/kernel"] = r(hidden, heads, hd)
      params[att + n + "/bias"] = r(heads, hd)
    params[att + "out/kernel"] = r(heads, hd, hidden)
    params[att + "out/bias"] = r(hidden)
    for ln in ("LayerNorm_0", "LayerNorm_2"):
      params[pre + ln + "/scale"] = 1 + r(hidden)
      params[pre + ln + "/bias"] = r(hidden)
    params[pre + "MlpBlock_3/Dense_0/kernel"] = r(hidden, mlp)
    params[pre + "MlpBlock_3/Dense_0/bias"] = r(mlp)
    params[pre + "MlpBlock_3/Dense_1/kernel"] = r(mlp, hidden)
    params[pre + "MlpBlock_3/Dense_1/bias"] = r(hidden)
  width = hidden
  if representation:
    params["pre_logits/kernel"] = r(hidden, representation)
    params["pre_logits/bias"] = r(representation)
    width = representation
  params["head/kernel"] = r(width, num_classes)
  params["head/bias"] = r(num_classes)
  return params


def to_big_vision(params):
  """The same weights under big_vision names: params/ prefix, renumbered modules, posemb without the cls row.

  Only exact when the class token's own position embedding row is zero, which callers ensure.
  """
  out = {}
  for key, value in params.items():
    key = key.replace("MultiHeadDotProductAttention_1", "MultiHeadDotProductAttention_0")
    key = key.replace("LayerNorm_2", "LayerNorm_1").replace("MlpBlock_3", "MlpBlock_0")
    if key == "Transformer/posembed_input/pos_embedding":
      key, value = "pos_embedding", value[:, 1:]
    out["params/" + key] = value
  return out


def conv_stem_tokens(params, images):
  """Tokens [B, N, D] of vit_raw's conv stem in float64 from {our name: array} (stem_i/..., embedding/...): each
  3x3 stride-2 SAME convolution written out as a sum over its nine taps, then the per-pixel layer norm and ReLU."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  x = np.asarray(images, np.float64)
  i = 0
  while "stem_%d/kernel" % i in p:
    kernel = p["stem_%d/kernel" % i]
    b, h, w, _ = x.shape
    # SAME with stride 2 on an even size pads one row and column after the image, none before (TensorFlow's rule).
    padded = np.pad(x, [(0, 0), (0, 1), (0, 1), (0, 0)])
    y = np.zeros((b, h // 2, w // 2, kernel.shape[-1]))
    for dy in range(3):
      for dx in range(3):
        y += padded[:, dy:dy + h:2, dx:dx + w:2, :] @ kernel[dy, dx]
    x = np.maximum(_layer_norm(y, p["stem_%d/norm/scale" % i], p["stem_%d/norm/bias" % i]), 0.0)
    i += 1
  x = x @ p["embedding/kernel"][0, 0] + p["embedding/bias"]
  return x.reshape(x.shape[0], -1, x.shape[-1])
