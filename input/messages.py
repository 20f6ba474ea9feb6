"""How the input package words a problem: names that cannot break a log line, and short lists of examples.

Every warning and info of the package goes through a `logging` logger under the "input" namespace (one per module:
input.datasets, input.image_folder, input.list_file, input.image_codec, input.pipeline), so one
handler on logging.getLogger("input") sees all of them; nothing here prints.
"""


def quote(name):
  """`name` as a message shows it: unchanged when it is plain printable text without edge spaces, else a Python
  string literal, so a newline, an escape sequence or an undecodable byte in a file name can neither split a log
  line nor hide what the name really is."""
  text = str(name)
  if text and text.isprintable() and text == text.strip():
    return text
  return repr(text)


def first_few(pairs, count=3):
  """'a: why; b: why' for the first `count` distinct (name, reason) pairs, plus '(and N more)' when there are more."""
  seen, shown = set(), []
  for name, reason in pairs:
    if name in seen:
      continue
    seen.add(name)
    if len(shown) < count:
      shown.append("%s: %s" % (quote(name), reason))
  more = len(seen) - len(shown)
  return "; ".join(shown) + (" (and %d more)" % more if more > 0 else "")
