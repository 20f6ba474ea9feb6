"""How one batch is made from its example indices: augment each into the output rows, handle bad files.

Train: a file that cannot be decoded is replaced by a deterministic other example (sampling.replacement_index), so
the batch keeps its static shape and the sequence stays reproducible. Eval: the row is zeroed and masked out.
Either way the event is reported back so the consumer can warn and count.
"""
from input import sampling
from input.image_codec import DecodeError

MAX_REPLACEMENTS = 20


def fill_batch(dataset, transform, out, epoch, indices, seed):
  """Writes the examples `indices` into out[:len(indices)] (zeros in the rest).

  Returns (final_indices, skips): final_indices[i] is the example that row i holds (train replacements) or -1
  (eval row masked out); skips is a list of (where, reason) for every bad file met.
  """
  final, skips = [], []
  for row, index in enumerate(indices):
    index = int(index)
    current = index
    for attempt in range(MAX_REPLACEMENTS + 1):
      try:
        transform.apply(dataset, current, sampling.augment_rng(seed, epoch, index, attempt), out[row])
        final.append(current)
        break
      except DecodeError as e:
        skips.append((e.path, e.reason))
        if not transform.training:
          out[row] = 0
          final.append(-1)
          break
        current = sampling.replacement_index(seed, epoch, index, attempt + 1, len(dataset))
    else:
      raise RuntimeError("%d bad files in a row while replacing example %d (%s): is the dataset mostly "
                         "unreadable?" % (MAX_REPLACEMENTS + 1, index, dataset.describe(index)))
  out[len(indices):] = 0
  return final, skips
