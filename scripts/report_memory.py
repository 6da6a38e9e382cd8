"""Bytes of every N:M kernel of an exported model (or of a shape and patterns): dense, packed with bit-packed
positions, packed with a bitmask, per value dtype, with totals and the ratio to the
packed-storage arithmetic of docs/method.md.

  .venv/bin/python scripts/report_memory.py --file=model.npz
  .venv/bin/python scripts/report_memory.py --shape=3072x768 --patterns=2:4,1:8,1:32,1:128
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pgf_sparsity.formats import model_files  # noqa: E402  pylint: disable=wrong-import-position
from pgf_sparsity.formats import nm_packing  # noqa: E402  pylint: disable=wrong-import-position

COLUMNS = ('layer', 'pattern', 'dtype', 'dense_bytes', 'index_bytes', 'bitmask_bytes', 'encoding', 'packed_bytes',
           'packed_fraction', 'spec_fraction', 'ratio_to_spec')


def layers_of(args):
  if args.file:
    _, meta = model_files.read(args.file)
    return {p: (meta['params'][p]['shape'], l['n'], l['m']) for p, l in meta['layers'].items()}
  shape = [int(d) for d in args.shape.split('x')]
  return {f'{args.shape} {p}': (shape, *(int(v) for v in p.split(':'))) for p in args.patterns.split(',')}


def table(rows) -> str:
  lines = ['| ' + ' | '.join(COLUMNS) + ' |', '|' + '---|' * len(COLUMNS)]
  for row in rows:
    lines.append('| ' + ' | '.join(f'{row[c]:.4f}' if isinstance(row[c], float) else str(row[c]) for c in COLUMNS)
                 + ' |')
  for dtype in dict.fromkeys(r['dtype'] for r in rows):
    mine = [r for r in rows if r['dtype'] == dtype]
    dense, packed = sum(r['dense_bytes'] for r in mine), sum(r['packed_bytes'] for r in mine)
    lines.append(f'| total | | {dtype} | {dense} | {sum(r["index_bytes"] for r in mine)} | '
                 f'{sum(r["bitmask_bytes"] for r in mine)} | | {packed} | {packed / dense:.4f} | | |')
  return '\n'.join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--file', help='an exported model (.npz, .safetensors or an orbax directory)')
  parser.add_argument('--shape', default='3072x768')
  parser.add_argument('--patterns', default='2:4,1:8,1:32,1:128')
  parser.add_argument('--dtypes', default=','.join(nm_packing.VALUE_BITS))
  args = parser.parse_args()
  print(table(nm_packing.memory_rows(layers_of(args), args.dtypes.split(','))))


if __name__ == '__main__':
  main()
