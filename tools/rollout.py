"""Where a ViT looks: attention rollout (Abnar & Zuidema 2020) and last-layer class-token attention, in NumPy.

Rollout: per layer, the heads' attention probabilities are fused (mean, max or min over heads), optionally the
lowest `discard_ratio` of the fused entries are set to zero (except the class token's attention to itself, the
sharpening popularised by jacobgil/vit-explain), the identity is added for the residual connection and the rows are
renormalised to sum to 1; the layers' matrices are multiplied in order (the last layer on the left). The class
token's row of the product, restricted to the patches and renormalised, is the map: one weight per patch, sum 1.
"""
import numpy as np

HEAD_FUSIONS = ("mean", "max", "min")
METHODS = ("rollout", "last_layer")


def fuse_heads(attention, head_fusion="mean"):
  """[B, heads, T, T] -> [B, T, T] by `head_fusion` over the heads."""
  if head_fusion not in HEAD_FUSIONS:
    raise ValueError("head_fusion must be one of %s, got %r" % (HEAD_FUSIONS, head_fusion))
  return getattr(np, head_fusion)(np.asarray(attention, np.float64), axis=1)


def discard_lowest(fused, ratio):
  """Zeroes the lowest `ratio` of each [T, T] matrix's entries (entry [0, 0] is always kept); returns a copy."""
  out = np.array(fused, np.float64)
  if ratio <= 0:
    return out
  batch, tokens = out.shape[0], out.shape[1]
  flat = out.reshape(batch, tokens * tokens)
  count = int(tokens * tokens * ratio)
  lowest = np.argsort(flat, axis=1, kind="stable")[:, :count]
  for b in range(batch):
    flat[b, lowest[b][lowest[b] != 0]] = 0.0
  return flat.reshape(out.shape)


def _cls_to_patches(matrix):
  row = matrix[:, 0, 1:]
  return row / row.sum(axis=1, keepdims=True)


def rollout(attentions, head_fusion="mean", discard_ratio=0.0):
  """Rollout maps [B, patches] (each sums to 1) of per-layer attentions, a list of [B, heads, T, T]."""
  result = None
  for attention in attentions:
    fused = discard_lowest(fuse_heads(attention, head_fusion), discard_ratio)
    eye = np.eye(fused.shape[-1])
    mixed = fused + eye
    mixed /= mixed.sum(axis=-1, keepdims=True)
    result = mixed if result is None else np.matmul(mixed, result)
  return _cls_to_patches(result)


def last_layer(attentions, head_fusion="mean"):
  """The class token's fused attention to the patches in the last layer, [B, patches], each summing to 1."""
  return _cls_to_patches(fuse_heads(attentions[-1], head_fusion))


def per_layer(attentions, head_fusion="mean"):
  """[layers, B, patches]: each layer's fused class-token attention to the patches, renormalised."""
  return np.stack([_cls_to_patches(fuse_heads(a, head_fusion)) for a in attentions])


def attention_map(attentions, method="rollout", head_fusion="mean", discard_ratio=0.0):
  """The map of `method` ("rollout" or "last_layer"), [B, patches]."""
  if method == "rollout":
    return rollout(attentions, head_fusion, discard_ratio)
  if method == "last_layer":
    return last_layer(attentions, head_fusion)
  raise ValueError("method must be one of %s, got %r" % (METHODS, method))
