"""How one batch is made from its example indices: augment each into the output rows, handle bad files.

Train: a file that cannot be decoded is replaced by a deterministic other example (sampling.replacement_index), so
the batch keeps its static shape and the sequence stays reproducible; MAX_REPLACEMENTS + 1 bad files in a row mean
the dataset is (nearly) all unreadable, an UnreadableDatasetError naming the first few files and why. Eval: the row
is zeroed and masked out. Either way the event is reported back so the consumer can warn and count.
Mixing (training with a mixing.MixSpec): after the rows are filled, each row's partner pixels are taken from this
batch when the partner is one of its rows, or made again (same index, same augment rng, same replacements) when
another rank holds it; bad files met while remaking a partner are that rank's to report, not this batch's.
"""
import collections

import numpy as np

from input import mixing
from input import sampling
from input.dataset_base import unreadable
from input.image_codec import DecodeError

MAX_REPLACEMENTS = 20

MixTask = collections.namedtuple("MixTask", ["decision", "partners", "partner_rows"])
MixTask.__doc__ = """What a worker needs to mix one batch.

Attributes:
  decision: the batch's mixing.MixDecision; partners: example index of each row's partner (BatchPlan.mix_partners);
  partner_rows: the local row holding each partner, or -1 (BatchPlan.partner_rows).
"""


def fill_row(dataset, transform, out_row, epoch, index, seed, on_example=None, skips=None):
  """Writes example `index` (or, in training, its deterministic replacement if it is a bad file) into out_row.

  Returns the example the row holds, or -1 (eval: the row is zeroed and masked out). Every bad file met is appended
  to `skips` as (where, reason). Training raises UnreadableDatasetError after MAX_REPLACEMENTS + 1 bad files.
  """
  index = int(index)
  current = index
  run = []
  for attempt in range(MAX_REPLACEMENTS + 1):
    if on_example is not None:
      on_example(dataset.describe(current))
    try:
      transform.apply(dataset, current, sampling.augment_rng(seed, epoch, index, attempt), out_row)
      return current
    except DecodeError as e:
      if skips is not None:
        skips.append((e.path, e.reason))
      run.append((e.path, e.reason))
      if not transform.training:
        out_row[...] = 0
        return -1
      current = sampling.replacement_index(seed, epoch, index, attempt + 1, len(dataset))
  raise unreadable(dataset, "%d files in a row, none" % len(run), run)


def fill_batch(dataset, transform, out, epoch, indices, seed, on_example=None, mix=None, scratch=None):
  """Writes the examples `indices` into out[:len(indices)] (zeros in the rest), then mixes them if `mix` says so.

  on_example(where), if given, is called with dataset.describe(i) before example i is read (so a worker can say
  which file it was decoding if it dies). mix: None, or a MixTask of this batch. scratch: a uint8 array shaped like
  `out` for partners held by other ranks (allocated here when None). Returns (final_indices, skips, partner_final):
  final_indices[i] is the example that row i holds (train replacements) or -1 (eval row masked out); skips is a
  list of (where, reason) for every bad file met in this batch's own rows; partner_final[i] is the example whose
  pixels row i was mixed with (None when nothing was mixed).
  """
  final, skips = [], []
  for row, index in enumerate(indices):
    final.append(fill_row(dataset, transform, out[row], epoch, index, seed, on_example, skips))
  out[len(indices):] = 0
  if mix is None or mix.decision.kind is None:
    return final, skips, None
  n = len(indices)
  if scratch is None:
    scratch = np.empty_like(out)
  partners = scratch[:n]
  partner_final = []
  for row in range(n):
    local = int(mix.partner_rows[row])
    if local >= 0:  # the partner is a row of this very batch: its unmixed pixels are already here
      partners[row] = out[local]
      partner_final.append(final[local])
    else:  # held by another rank: made again exactly as that rank makes it (its own rng, same replacements)
      partner_final.append(fill_row(dataset, transform, partners[row], epoch, mix.partners[row], seed, on_example))
  mixing.mix_rows(mix.decision, out[:n], partners)
  return final, skips, partner_final
