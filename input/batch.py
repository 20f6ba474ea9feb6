"""How one batch is made from its example indices: augment each into the output rows, handle bad files.

Train: a file that cannot be decoded is replaced by a deterministic other example (sampling.replacement_index), so
the batch keeps its static shape and the sequence stays reproducible; MAX_REPLACEMENTS + 1 bad files in a row mean
the dataset is (nearly) all unreadable, an UnreadableDatasetError naming the first few files and why. Eval: the row
is zeroed and masked out. Either way the event is reported back so the consumer can warn and count.
"""
from input import sampling
from input.dataset_base import unreadable
from input.image_codec import DecodeError

MAX_REPLACEMENTS = 20


def fill_batch(dataset, transform, out, epoch, indices, seed, on_example=None):
  """Writes the examples `indices` into out[:len(indices)] (zeros in the rest).

  on_example(where), if given, is called with dataset.describe(i) before example i is read (so a worker can say
  which file it was decoding if it dies). Returns (final_indices, skips): final_indices[i] is the example that row
  i holds (train replacements) or -1 (eval row masked out); skips is a list of (where, reason) for every bad file
  met.
  """
  final, skips = [], []
  for row, index in enumerate(indices):
    index = int(index)
    current = index
    run = []
    for attempt in range(MAX_REPLACEMENTS + 1):
      if on_example is not None:
        on_example(dataset.describe(current))
      try:
        transform.apply(dataset, current, sampling.augment_rng(seed, epoch, index, attempt), out[row])
        final.append(current)
        break
      except DecodeError as e:
        skips.append((e.path, e.reason))
        run.append((e.path, e.reason))
        if not transform.training:
          out[row] = 0
          final.append(-1)
          break
        current = sampling.replacement_index(seed, epoch, index, attempt + 1, len(dataset))
    else:
      raise unreadable(dataset, "%d files in a row, none" % len(run), run)
  out[len(indices):] = 0
  return final, skips
