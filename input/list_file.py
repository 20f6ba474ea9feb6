"""List files: one `relative/path label` per line, and how many classes a folder of lists names.

Format: UTF-8 text (a byte-order mark is allowed and dropped), one `path label` per line; the label is the last
whitespace-separated field and an ASCII integer >= 0, so paths may hold spaces; blank lines and lines starting with
# are ignored. Relative paths are resolved against the list file's own folder (a URL's too); absolute paths and URLs
are used as they are.
Anything else (Latin-1 bytes, a label like "²", "--3" or "-1", a NUL in a path) is a ValueError naming the file and
the line.
Classes: classes.txt beside the list names them (one per line). Without it num_classes is 1 + the largest label
over the split lists of that folder (train.txt, val.txt, validation.txt, test.txt, and the list itself), so train
and val agree; other .txt files there (notes.txt) are not read. Which lists were read is logged (input.list_file).
"""
import codecs
import logging
import os
import re

from input import filesystem
from input.dataset_base import FileDataset
from input.messages import quote
from input.errors import DataError

CLASS_LIST_FILE = "classes.txt"
SPLIT_LISTS = ("train.txt", "val.txt", "validation.txt", "test.txt")
MAX_LABEL = 2**31 - 1  # labels are int32 in the graph
_LABEL = re.compile(r"[0-9]+\Z")

_log = logging.getLogger(__name__)


def _text_lines(path):
  """[(line number, text)] of a UTF-8 text file; ValueError naming the file and line when a line is not UTF-8."""
  raw = filesystem.read_file(path)
  if raw.startswith(codecs.BOM_UTF8):
    raw = raw[len(codecs.BOM_UTF8):]
  lines = []
  for number, line in enumerate(raw.split(b"\n"), 1):
    try:
      lines.append((number, line.decode("utf-8")))
    except UnicodeDecodeError as e:
      raise DataError("%s line %d: not UTF-8 text (byte 0x%02x at column %d): expected a UTF-8 list file" %
                      (path, number, line[e.start], e.start + 1))
  return lines


def parse_list(list_path):
  """[(path as written, label)] of a list file; ValueError naming the file and line for a malformed line."""
  entries = []
  for number, text in _text_lines(list_path):
    line = text.strip()
    if not line or line.startswith("#"):
      continue
    parts = line.rsplit(None, 1)
    where = "%s line %d" % (list_path, number)
    if len(parts) != 2:
      raise DataError("%s: expected 'relative/path label', got %s" % (where, quote(line)))
    name, label = parts
    if not _LABEL.match(label) or int(label) > MAX_LABEL:
      raise DataError("%s: label %s is not an integer in 0..%d: expected 'relative/path label'" %
                      (where, quote(label), MAX_LABEL))
    if "\x00" in name:
      raise DataError("%s: the path holds a NUL character: expected 'relative/path label'" % where)
    entries.append((name, int(label)))
  return entries


def _class_names(list_path, labels):
  folder = os.path.dirname(list_path)
  names_path = os.path.join(folder, CLASS_LIST_FILE)
  if filesystem.isfile(names_path):
    names = [text.strip() for _, text in _text_lines(names_path) if text.strip()]
    if max(labels) >= len(names):
      raise DataError("%s names %d classes but %s uses label %d" % (names_path, len(names), list_path, max(labels)))
    _log.info("input: %d classes, named by %s", len(names), quote(names_path))
    return names
  top, read = max(labels), [list_path]
  for name in SPLIT_LISTS:
    other = os.path.join(folder, name)
    if other != list_path and filesystem.isfile(other):
      top = max([top] + [label for _, label in parse_list(other)])
      read.append(other)
  unread = sorted(
      n for n in filesystem.listdir(folder) if n.lower().endswith(".txt") and os.path.join(folder, n) not in read)
  _log.info("input: %d classes = 1 + the largest label in %s (in %s)%s", top + 1,
            ", ".join(quote(os.path.basename(r)) for r in read), quote(folder),
            "; not read: %s" % ", ".join(quote(n) for n in unread) if unread else "")
  return [str(i) for i in range(top + 1)]


def load_list_file(list_path, split):
  """FileDataset over the entries of a `path label` list file; raises ValueError naming the file."""
  list_path = filesystem.abspath(list_path)
  if not filesystem.isfile(list_path):
    raise DataError("%s does not exist: expected a list file of 'relative/path label' lines" % list_path)
  entries = parse_list(list_path)
  if not entries:
    raise DataError("%s is empty: expected 'relative/path label' lines" % list_path)
  base = os.path.dirname(list_path)
  paths = [p if os.path.isabs(p) or filesystem.is_url(p) else os.path.join(base, p) for p, _ in entries]
  labels = [label for _, label in entries]
  return FileDataset("list", split, _class_names(list_path, labels), paths, labels, source=list_path)
