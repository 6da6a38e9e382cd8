"""Inference from the packed N:M form against dense, side by side in one process (interleaved rounds).

  .venv/bin/python scripts/bench_inference.py --json=results/inference/bench.json   # measure (~15 min, 2 cores)
  .venv/bin/python scripts/bench_inference.py --from_json=results/inference/bench.json \
      --markdown=results/inference/table.md --summary=results/inference/summary.md   # the tables, from the data
  .venv/bin/python scripts/bench_inference.py --blocks=vit --layers=12 --batches=1 --patterns=1:8,1:32
  .venv/bin/python scripts/bench_inference.py --model_file=model.npz --json=results/inference/main_job_model.json
                                                  # an exported model's whole evaluation, dense vs packed
  .venv/bin/python scripts/bench_inference.py --t5_decoding=1:32 --json=results/inference/t5_decoding.json

Blocks in sequence, float32, with random weights pruned N:M by magnitude: ViT-B/16's MLP (768 -> 3072 -> 768,
GELU) and T5-base's gated feed-forward (768 -> 2 x 2048 -> 768), each with an RMS pre-norm and its residual.
Dense runs XLA's matmul on the dense kernels; sparse runs the N:M kernel (pgf_sparsity.inference) on the
compact form, checked equal to dense first. For each row: median ms per call, the paired speedup over dense
(geometric mean over rounds of dense's time over this row's time in the same round, with its 95% interval),
the path the automatic choice takes, and the bytes of weights read per call. `--json=FILE` writes one object
per row (block, layers, batch, pattern, dtype, ms, speedup, low, high, auto, bytes, machine).
"""
import argparse
import functools
import json
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')  # the evaluation's input pipeline (--model_file) uses TF
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
import sys

import jax
import jax.numpy as jnp
import numpy as np

from pgf_sparsity.inference import kernel as kernel_lib
from pgf_sparsity.inference import packed_layers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine  # noqa: E402  pylint: disable=g-import-not-at-top
from bench_train_step import measure, paired_ratio  # noqa: E402  pylint: disable=g-import-not-at-top

BLOCKS = {'vit': (768, 3072, False), 't5': (768, 2048, True)}  # (width, hidden, gated)


def block_kernels(block: str, layers: int, seed: int = 0):
  """Per layer, the block's kernels (in, out), float32, at a scale that keeps activations O(1)."""
  width, hidden, gated = BLOCKS[block]
  rng = np.random.default_rng(seed)
  shapes = [(width, hidden)] * (2 if gated else 1) + [(hidden, width)]
  return [[(rng.standard_normal(s) / np.sqrt(s[0])).astype(np.float32) for s in shapes] for _ in range(layers)]


def pruned(kernel: np.ndarray, n: int, m: int) -> np.ndarray:
  """The kernel with all but the N largest magnitudes of each group of M along `in` set to zero."""
  groups = kernel.reshape(-1, m, kernel.shape[1])
  keep = np.argsort(np.argsort(-np.abs(groups), axis=1, kind='stable'), axis=1, kind='stable') < n
  return (groups * keep).reshape(kernel.shape)


def forward(block: str, matmul):
  """The blocks in sequence, each layer's product through `matmul(x, layer, index)`."""
  gated = BLOCKS[block][2]

  def run(x, weights):
    for layer in weights:
      normed = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + 1e-6)  # pre-norm, as both models
      hidden = jax.nn.gelu(matmul(normed, layer[0]))
      if gated:
        hidden = hidden * matmul(normed, layer[1])
      x = x + matmul(hidden, layer[-1])
    return x
  return jax.jit(run)


def cases(block: str, layers: int, batch: int, patterns):
  """{name: (jitted forward, weights, bytes read, compact kernels)} for dense and each pattern."""
  kernels = block_kernels(block, layers)
  x = jnp.asarray(np.random.default_rng(1).standard_normal((batch, BLOCKS[block][0])).astype(np.float32))
  out = {'dense': (forward(block, lambda h, w: h @ w), [[jnp.asarray(k) for k in layer] for layer in kernels],
                   sum(k.nbytes for layer in kernels for k in layer), None)}
  for pattern in patterns:
    n, m = map(int, pattern.split(':'))
    compact = [[packed_layers.from_dense(pruned(k, n, m), n, m) for k in layer] for layer in kernels]
    sparse = forward(block, lambda h, arrays, m=m: kernel_lib.nm_matmul(h, *arrays, m))  # widths: whole blocks
    weights = [[(jnp.asarray(c.values), jnp.asarray(c.positions)) for c in layer] for layer in compact]
    out[pattern] = (sparse, weights, sum(c.bytes_read() for layer in compact for c in layer), compact[0][0])
  return x, out


def check_equal(x, built, patterns, block, layers) -> None:
  """Each pattern's sparse forward against the dense forward on the same pruned weights."""
  kernels = block_kernels(block, layers)
  dense = forward(block, lambda h, w: h @ w)
  for pattern in patterns:
    n, m = map(int, pattern.split(':'))
    want = dense(x, [[jnp.asarray(pruned(k, n, m)) for k in layer] for layer in kernels])
    run, weights, _, _ = built[pattern]
    np.testing.assert_allclose(np.asarray(run(x, weights)), np.asarray(want), rtol=2e-4, atol=2e-4)


def bench(block, layers, batch, patterns, rounds, calls):
  x, built = cases(block, layers, batch, patterns)
  check_equal(x, built, patterns, block, layers)
  runs = {}
  for name, (run, weights, _, _) in built.items():
    run(x, weights).block_until_ready()  # compiled before timing

    def call(times, run=run, weights=weights):
      for _ in range(times):
        y = run(x, weights)
      y.block_until_ready()
    runs[name] = {'run': call, 'times': [], 'cpu_times': []}
  measure(runs, rounds, calls)
  rows = []
  for name, (_, _, read, compact) in built.items():
    speedup, high, low = (1.0, 1.0, 1.0) if name == 'dense' else (
        1 / r for r in paired_ratio(runs[name]['times'], runs['dense']['times']))
    auto = 'dense' if compact is None else packed_layers.automatic(compact.n, compact.m, batch)
    rows.append(dict(block=block, layers=layers, batch=batch, pattern=name, dtype='float32',
                     ms=float(np.median(runs[name]['times']) * 1e3), speedup=speedup, low=low, high=high,
                     auto=auto, bytes=int(read)))
  return rows


def bench_model_file(path: str, rounds: int):
  """A whole exported model's evaluation (its run's evaluation set), dense against the packed form (auto)."""
  from pgf_sparsity.formats import exporting  # pylint: disable=g-import-not-at-top
  from pgf_sparsity.training import steps  # pylint: disable=g-import-not-at-top
  exp, data, params = exporting.evaluation_inputs(path)
  packed = packed_layers.from_file(path, 'auto')
  compiled = {'dense': steps.CompiledSteps(exp), 'packed (auto)': steps.CompiledSteps(exp, packed)}
  results = {name: c.evaluate(params, data) for name, c in compiled.items()}  # compiled, and checked equal
  runs = {name: {'run': lambda times, c=c: [c.evaluate(params, data) for _ in range(times)], 'times': [],
                 'cpu_times': []} for name, c in compiled.items()}
  measure(runs, rounds, 1)
  rows_per_call = exp.config.eval_batch_size  # at least: every token of the batch is a row
  sparse_layers = sum(packed_layers.automatic(k.n, k.m, rows_per_call) == 'sparse' for k in packed.kernels.values())
  read = {'dense': sum(4 * k.fan_in * k.fan_out for k in packed.kernels.values()),
          'packed (auto)': sum(k.bytes_read() for k in packed.kernels.values())}  # the N:M kernels' bytes
  rows = []
  for name in compiled:
    speedup, high, low = (1 / r for r in paired_ratio(runs[name]['times'], runs['dense']['times']))
    rows.append(dict(block=f'{os.path.basename(path)}: whole evaluation', layers=len(packed.kernels),
                     batch=exp.config.eval_batch_size, pattern=name, dtype='float32',
                     ms=float(np.median(runs[name]['times']) * 1e3), speedup=speedup, low=low, high=high,
                     auto=f'{sparse_layers} layers sparse', bytes=read[name],
                     accuracy=results[name].get('accuracy')))
  return rows


T5_TARGETS = ('attention/query/kernel', 'attention/key/kernel', 'attention/value/kernel', 'attention/out/kernel',
              'mlp/wi_0/kernel', 'mlp/wi_1/kernel', 'mlp/wo/kernel')


def t5_decoding_cases(pattern: str, input_length: int, max_length: int):
  """A T5-base-shaped random model pruned N:M in every attention projection and feed-forward layer: its
  dense and packed greedy decoders (jitted), their arguments, and the compact kernels."""
  from pgf_sparsity.models import t5  # pylint: disable=g-import-not-at-top
  from pgf_sparsity.sparsity import tree_paths  # pylint: disable=g-import-not-at-top
  from pgf_sparsity.tasks import decoding  # pylint: disable=g-import-not-at-top
  n, m = map(int, pattern.split(':'))
  model = t5.T5(vocab_size=32128, **t5.decode_variant('base'))
  inputs = jnp.asarray(np.random.default_rng(2).integers(2, 32128, (1, input_length)), jnp.int32)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), inputs, inputs[:, :max_length])['params']
  flat = {p: np.asarray(a) for p, a in tree_paths.flatten(jax.device_get(params)).items()}
  kernels = {}
  for path in [p for p in flat if p.endswith(T5_TARGETS)]:
    flat[path] = pruned(flat[path], n, m)
    kernels[path] = packed_layers.from_dense(flat[path], n, m)
  params = tree_paths.nest({p: jnp.asarray(a) for p, a in flat.items()})
  packed = packed_layers.PackedModel(kernels, 'auto')
  cache = model.empty_cache(1, max_length)

  def decoder(apply):
    return jax.jit(lambda p, arrays, x: decoding.greedy(functools.partial(apply, arrays=arrays), p, x, max_length,
                                                        cache))

  dense = decoder(lambda p, *a, arrays, variables=None, **kw: model.apply({'params': p, **(variables or {})}, *a,
                                                                          **kw))
  sparse = decoder(lambda p, *a, arrays, variables=None, **kw: packed.apply(
      model, {'params': p, **(variables or {})}, *a, arrays=arrays, **kw))
  return {'dense': dense, pattern: sparse}, (params, packed.arrays, inputs), kernels


def bench_t5_decoding(pattern: str, rounds: int, input_length: int = 64, max_length: int = 32):
  """Greedy decoding tokens/s at batch 1, dense against the packed form, and whether the tokens agree."""
  decoders, args, kernels = t5_decoding_cases(pattern, input_length, max_length)
  tokens = {name: np.asarray(run(*args)) for name, run in decoders.items()}  # compiled, and compared
  runs = {name: {'run': lambda times, run=run: [run(*args).block_until_ready() for _ in range(times)],
                 'times': [], 'cpu_times': []} for name, run in decoders.items()}
  measure(runs, rounds, 1)
  read = {'dense': sum(4 * k.fan_in * k.fan_out for k in kernels.values()),
          pattern: sum(k.bytes_read() for k in kernels.values())}
  rows = []
  for name in decoders:
    speedup, high, low = (1 / r for r in paired_ratio(runs[name]['times'], runs['dense']['times']))
    ms = float(np.median(runs[name]['times']) * 1e3)
    rows.append(dict(block=f'T5-base greedy decoding, {max_length} tokens', layers=len(kernels), batch=1,
                     pattern=name, dtype='float32', ms=ms, speedup=speedup, low=low, high=high, auto='sparse',
                     bytes=read[name], tokens_per_s=max_length / ms * 1e3,
                     same_tokens=bool((tokens[name] == tokens['dense']).all())))
  return rows


def markdown(rows) -> str:
  """Every row: the table of docs/inference.md."""
  lines = [f'Measured by `scripts/bench_inference.py` on {rows[0]["machine"]}; float32; speedup: paired, over',
           'dense, with its 95% interval; "auto": the path the automatic choice takes.', '',
           '| block | layers | batch | pattern | ms | speedup (95% CI) | auto | MB read |',
           '|---|---:|---:|---|---:|---|---|---:|']
  decoding = all('tokens_per_s' in r for r in rows)
  if decoding:  # a tokens/s column, and whether the packed decoder chose the dense one's tokens
    lines[-2:] = [lines[-2] + ' tokens/s | same tokens |', lines[-1] + '---:|---|']
  for r in rows:
    interval = '' if r['pattern'] == 'dense' else f' ({r["low"]:.2f}-{r["high"]:.2f})'
    extra = f' {r["tokens_per_s"]:.1f} | {"yes" if r["same_tokens"] else "no"} |' if decoding else ''
    lines.append(f'| {r["block"]} | {r["layers"]} | {r["batch"]} | {r["pattern"]} | {r["ms"]:.2f} | '
                 f'{r["speedup"]:.2f}x{interval} | {r["auto"]} | {r["bytes"] / 1e6:.1f} |' + extra)
  return '\n'.join(lines) + '\n'


def summary(rows) -> str:
  """The README's table: the longest stacks (12 blocks), speedup over dense per pattern and batch."""
  stacks = [r for r in rows if r['layers'] == max(r['layers'] for r in rows)]
  patterns = sorted({r['pattern'] for r in stacks} - {'dense'}, key=lambda p: int(p.split(':')[1]))
  names = {'vit': 'ViT-B/16 MLP', 't5': 'T5-base gated FF'}
  lines = [f'| {stacks[0]["layers"]} blocks | batch | dense ms | ' + ' | '.join(patterns) + ' |',
           '|---|---:|---:|' + '---:|' * len(patterns)]
  for block, batch in sorted({(r['block'], r['batch']) for r in stacks}, key=lambda k: (k[0] != 'vit', k[1])):
    cells = {r['pattern']: r for r in stacks if (r['block'], r['batch']) == (block, batch)}
    speedups = [f'{cells[p]["speedup"]:.1f}x' + ('' if cells[p]['auto'] == 'sparse' else ' (dense)')
                for p in patterns]
    lines.append(f'| {names.get(block, block)} | {batch} | {cells["dense"]["ms"]:.1f} | ' + ' | '.join(speedups)
                 + ' |')
  note = '"(dense)": the automatic choice computes densely there'
  return '\n'.join(lines) + f'\n\n{rows[0]["machine"]}; float32; {note}.\n'


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--blocks', default='vit,t5')
  parser.add_argument('--layers', default='12,1', help='blocks in sequence; 1: a single block (fits in cache)')
  parser.add_argument('--batches', default='1,8,64')
  parser.add_argument('--patterns', default='2:4,1:8,1:32,1:64')
  parser.add_argument('--rounds', type=int, default=10)
  parser.add_argument('--calls', type=int, default=5, help='calls per round')
  parser.add_argument('--json', default='', help='write the rows to this file')
  parser.add_argument('--model_file', default='', help='instead: an exported model\'s whole evaluation')
  parser.add_argument('--t5_decoding', default='', help='instead: T5-base greedy decoding at batch 1 with this '
                      'N:M in every attention projection and feed-forward layer, e.g. 1:32')
  parser.add_argument('--from_json', default='', help='measure nothing: the tables of the rows in this file')
  parser.add_argument('--markdown', default='', help='write the full table to this file')
  parser.add_argument('--summary', default='', help="write the README's table to this file")
  args = parser.parse_args()
  if args.from_json:
    with open(args.from_json) as f:
      rows = json.load(f)
  elif args.model_file or args.t5_decoding:
    rows = (bench_model_file(args.model_file, args.rounds) if args.model_file else
            bench_t5_decoding(args.t5_decoding, args.rounds))
    rows = [dict(r, machine=machine.describe()) for r in rows]
    if args.json:
      with open(args.json, 'w') as f:
        json.dump(rows, f, indent=1)
  else:
    rows = measure_all(args)
  table = markdown(rows)
  sys.stdout.write(table)
  for path, render in ((args.markdown, markdown), (args.summary, summary)):
    if path:
      with open(path, 'w') as f:
        f.write(render(rows))


def measure_all(args):
  if not kernel_lib.available():
    sys.exit(f'error: {kernel_lib.unavailable_reason()}')
  rows, where = [], machine.describe()
  for block in args.blocks.split(','):
    for layers in map(int, args.layers.split(',')):
      for batch in map(int, args.batches.split(',')):
        rows += [dict(r, machine=where) for r in bench(block, layers, batch, args.patterns.split(','), args.rounds,
                                                       args.calls)]
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(rows, f, indent=1)
  return rows


if __name__ == '__main__':
  main()
