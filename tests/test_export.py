"""Shipping N:M models: bit-packed kernels, the three file formats, PyTorch layout, a loader without JAX,
the memory arithmetic, errors, and a trained run exported and evaluated from its file."""
import json
import math
import os
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest

from pgf_sparsity.formats import exporting
from pgf_sparsity.formats import model_files
from pgf_sparsity.formats import nm_packing
from pgf_sparsity.formats import tensor_cores
from pgf_sparsity.sparsity import nm
from pgf_sparsity.sparsity import tree_paths
from pgf_sparsity.training import metric_writers
from pgf_sparsity.training import train

sys.path.insert(0, os.path.dirname(__file__))
from helpers import ROOT, load_config  # noqa: E402

PATTERNS = [(2, 4), (1, 4), (4, 8), (1, 8), (16, 32), (1, 32), (8, 64), (1, 64), (1, 128)]
DTYPES = [np.float32, ml_dtypes.bfloat16]


def bits(array: np.ndarray) -> np.ndarray:
  """The bit pattern of a float array (so that comparisons are bit for bit, -0.0 and NaN included)."""
  return array.view({2: np.uint16, 4: np.uint32}[array.dtype.itemsize])


def n_m_kernel(shape, n, m, axes, dtype, seed=0):
  w = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
  mask = np.array(nm.nm_mask(w, n, m, axes))
  return np.where(mask, w, 0.0).astype(dtype), mask


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('axes', [(0,), (1,)])  # group along `in` (the default) and along `out`
@pytest.mark.parametrize('n,m', PATTERNS)
def test_pack_unpack_is_bit_identical_and_as_small_as_the_spec_says(n, m, axes, dtype):
  shape = (256, 128)
  kernel, mask = n_m_kernel(shape, n, m, axes, dtype)
  packed = nm_packing.pack(kernel, mask, n, m, axes)
  np.testing.assert_array_equal(bits(nm_packing.unpack(packed)), bits(kernel))
  assert packed.encoding == ('bitmask' if (n, m) in ((4, 8), (16, 32)) else 'index')
  size = math.prod(shape)
  expected_code_bits = size if packed.encoding == 'bitmask' else size // m * n * math.ceil(math.log2(m))
  assert packed.code.nbytes == math.ceil(expected_code_bits / 8)
  assert packed.values.nbytes == size * n // m * np.dtype(dtype).itemsize


def test_bits_are_packed_little_endian():
  packed = nm_packing.pack_bits(np.array([1, 2, 3]), 2)  # 01 10 11 -> bits 1,0, 0,1, 1,1
  assert packed.tolist() == [0b111001]
  np.testing.assert_array_equal(nm_packing.unpack_bits(packed, 2, 3), [1, 2, 3])
  values = np.random.default_rng(0).integers(0, 128, 1001)
  np.testing.assert_array_equal(nm_packing.unpack_bits(nm_packing.pack_bits(values, 7), 7, 1001), values)


def test_a_mask_that_is_not_exactly_n_m_is_refused():
  kernel, mask = n_m_kernel((8, 4), 1, 4, (0,), np.float32)
  mask[0, 0] = mask[1, 0] = mask[2, 0] = mask[3, 0] = True
  with pytest.raises(ValueError, match='not exactly 1:4'):
    nm_packing.pack(kernel, mask, 1, 4, (0,))


def test_memory_rows_follow_the_spec_arithmetic():
  rows = {(r['pattern'], r['dtype']): r for r in nm_packing.memory_rows({'ff': ((3072, 768), 1, 32),
                                                                        'ff2': ((3072, 768), 2, 4),
                                                                        'ff3': ((3072, 768), 4, 8)})}
  # docs/method.md: 1:32 in bf16 is 4.1% of dense; 2:4 in bf16 56.25%; 4:8 takes the bitmask.
  assert rows[('1:32', 'bfloat16')]['packed_fraction'] == pytest.approx(1 / 32 + 5 / 32 / 16)
  assert round(rows[('1:32', 'bfloat16')]['packed_fraction'], 3) == 0.041
  assert rows[('2:4', 'bfloat16')]['packed_fraction'] == 0.5625
  assert rows[('2:4', 'float32')]['packed_bytes'] == 3072 * 768 // 2 * 4 + 3072 * 768 // 2 * 2 // 8
  assert rows[('4:8', 'float16')]['encoding'] == 'bitmask'
  assert rows[('4:8', 'float16')]['packed_bytes'] == 3072 * 768 // 2 * 2 + 3072 * 768 // 8
  assert all(r['ratio_to_spec'] == pytest.approx(1.0, abs=1e-12) for r in rows.values())


def model_parameters(dtype):
  """A small ViT-like parameter set: a conv patch embedding, sparse FF kernels, norms and biases."""
  rng = np.random.default_rng(1)
  fc1, _ = n_m_kernel((32, 64), 2, 4, (0,), dtype, seed=2)
  fc2, _ = n_m_kernel((64, 32), 1, 8, (0,), dtype, seed=3)
  flat = {'embedding/kernel': rng.normal(size=(4, 4, 3, 32)).astype(dtype),
          'embedding/bias': rng.normal(size=(32,)).astype(dtype),
          'block/mlp/fc1/kernel': fc1, 'block/mlp/fc1/bias': rng.normal(size=(64,)).astype(dtype),
          'block/mlp/fc2/kernel': fc2, 'block/norm/scale': rng.normal(size=(32,)).astype(dtype),
          'head/kernel': rng.normal(size=(32, 10)).astype(dtype)}
  sparse = {'block/mlp/fc1/kernel': {'n': 2, 'm': 4, 'axes': [0], 'in_ndim': 1},
            'block/mlp/fc2/kernel': {'n': 1, 'm': 8, 'axes': [0], 'in_ndim': 1}}
  return flat, sparse


FORMATS = {'npz': ('model.npz', False), 'safetensors': ('model.safetensors', False),
           'safetensors_packed': ('model.safetensors', True), 'orbax': ('model_dir', False)}


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('fmt', sorted(FORMATS))
def test_every_format_round_trips_bit_identically_with_metadata(fmt, dtype, tmp_path):
  flat, sparse = model_parameters(dtype)
  name, packed = FORMATS[fmt]
  meta = model_files.describe(flat, sparse, step=7, config={'seed': 0})
  model_files.write(str(tmp_path / name), flat, meta, packed)
  loaded, loaded_meta = model_files.read(str(tmp_path / name))
  assert sorted(loaded) == sorted(flat)
  for path, array in flat.items():
    assert loaded[path].dtype == array.dtype and loaded[path].shape == array.shape, path
    np.testing.assert_array_equal(bits(loaded[path]), bits(array), err_msg=path)
  assert loaded_meta['version'] == model_files.VERSION and loaded_meta['step'] == 7
  assert loaded_meta['layers']['block/mlp/fc1/kernel']['n'] == 2 and loaded_meta['config'] == {'seed': 0}


def test_safetensors_is_in_pytorch_layout_and_names(tmp_path):
  flat, sparse = model_parameters(np.float32)
  path = str(tmp_path / 'model.safetensors')
  model_files.write(path, flat, model_files.describe(flat, sparse))
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  tensors = load_file(path)
  assert set(tensors) == {'embedding.weight', 'embedding.bias', 'block.mlp.fc1.weight', 'block.mlp.fc1.bias',
                          'block.mlp.fc2.weight', 'block.norm.weight', 'head.weight'}
  np.testing.assert_array_equal(tensors['block.mlp.fc1.weight'], flat['block/mlp/fc1/kernel'].T)  # (out, in)
  np.testing.assert_array_equal(tensors['embedding.weight'], flat['embedding/kernel'].transpose(3, 2, 0, 1))
  # 2:4 along `in`, the last axis in PyTorch's layout: what to_sparse_semi_structured expects.
  groups = (tensors['block.mlp.fc1.weight'].reshape(64, 8, 4) != 0).sum(-1)
  assert (groups == 2).all()
  # The packed variant gives the same PyTorch-layout arrays to a reader.
  packed_path = str(tmp_path / 'packed.safetensors')
  model_files.write(packed_path, flat, model_files.describe(flat, sparse), packed=True)
  assert os.path.getsize(packed_path) < os.path.getsize(path)
  torch_arrays, _ = model_files.read_torch_layout(packed_path)
  for name, array in tensors.items():
    np.testing.assert_array_equal(torch_arrays[name], array)


def test_the_safetensors_loader_needs_no_jax(tmp_path):
  flat, sparse = model_parameters(ml_dtypes.bfloat16)
  for name, packed in (('dense.safetensors', False), ('packed.safetensors', True)):
    model_files.write(str(tmp_path / name), flat, model_files.describe(flat, sparse), packed)
  script = ('import sys; sys.modules["jax"] = None; sys.modules["flax"] = None\n'
            'from pgf_sparsity.formats import model_files\n'
            f'for name in ("dense", "packed"):\n'
            f'  arrays, meta = model_files.read_torch_layout("{tmp_path}/" + name + ".safetensors")\n'
            '  assert arrays["block.mlp.fc1.weight"].shape == (64, 32), arrays.keys()\n'
            'print("ok")\n')
  out = subprocess.run([sys.executable, '-c', script], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0 and out.stdout.strip() == 'ok', out.stderr[-2000:]


def test_torch_reads_the_dense_file_as_a_2_4_weight(tmp_path):
  torch = pytest.importorskip('torch')
  from safetensors.torch import load_file  # pylint: disable=g-import-not-at-top
  flat, sparse = model_parameters(ml_dtypes.bfloat16)
  path = str(tmp_path / 'model.safetensors')
  model_files.write(path, flat, model_files.describe(flat, sparse))
  weight = load_file(path)['block.mlp.fc1.weight']
  assert weight.dtype == torch.bfloat16 and tuple(weight.shape) == (64, 32)
  np.testing.assert_array_equal(weight.view(torch.int16).numpy().view(np.uint16), bits(flat['block/mlp/fc1/kernel'].T.copy()))
  assert ((weight.reshape(64, 8, 4) != 0).sum(-1) == 2).all()
  if torch.cuda.is_available():  # sparse tensor cores: the layout is accepted as it is
    torch.sparse.to_sparse_semi_structured(weight.cuda().half())


def test_bad_files_are_refused_with_one_clear_error(tmp_path):
  flat, sparse = model_parameters(np.float32)
  meta = model_files.describe(flat, sparse)
  for name in ('model.npz', 'model.safetensors'):
    path = str(tmp_path / name)
    model_files.write(path, flat, meta, packed=False)
    data = open(path, 'rb').read()
    with open(tmp_path / f'truncated_{name}', 'wb') as f:
      f.write(data[:len(data) // 2])
    with pytest.raises(model_files.ModelFileError, match='not a readable'):
      model_files.read(str(tmp_path / f'truncated_{name}'))
  # Another format version.
  model_files.write(str(tmp_path / 'v9.safetensors'), flat, dict(meta, version=9))
  with pytest.raises(model_files.ModelFileError, match='format version 9'):
    model_files.read(str(tmp_path / 'v9.safetensors'))
  # A corrupted index: two kept weights at the same position.
  arrays = dict(np.load(tmp_path / 'model.npz'))
  arrays['code/block/mlp/fc2/kernel'] = np.zeros_like(arrays['code/block/mlp/fc2/kernel'])
  arrays['code/block/mlp/fc1/kernel'] = np.zeros_like(arrays['code/block/mlp/fc1/kernel'])
  np.savez(tmp_path / 'corrupt.npz', **arrays)
  with pytest.raises(model_files.ModelFileError, match='corrupted at block/mlp/fc1/kernel'):
    model_files.read(str(tmp_path / 'corrupt.npz'))
  # Parameters that are not exactly N:M.
  dense = dict(flat, **{'block/mlp/fc1/kernel': np.ones((32, 64), np.float32)})
  with pytest.raises(model_files.ModelFileError, match='not exactly 2:4'):
    model_files.write(str(tmp_path / 'dense.npz'), dense, meta)


def test_a_damaged_orbax_directory_is_refused_in_one_line_with_no_traceback(tmp_path):
  """A failed orbax read leaves its other reads to finish against a closed event loop; their refusals
  (hundreds of tracebacks, through sys.unraisablehook) must not follow the one-line error."""
  flat, sparse = model_parameters(np.float32)
  directory = tmp_path / 'model_dir'
  model_files.write(str(directory), flat, model_files.describe(flat, sparse))
  data_files = [os.path.join(d, n) for d, _, names in os.walk(directory) for n in names if os.path.basename(d) == 'd']
  assert data_files
  for path in data_files:
    with open(path, 'r+b') as f:
      f.seek(os.path.getsize(path) // 2)
      f.write(bytes(range(64)))
  done = subprocess.run([sys.executable, '-m', 'pgf_sparsity.export', f'--verify={directory}/'], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 2, done.stderr[-3000:]
  lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
  assert len(lines) == 1 and 'is not a readable pgf_sparsity model directory' in lines[0], lines[:20]


@pytest.fixture(scope='module')
def trained_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('run'))
  train.train_and_evaluate(load_config('digits', 'steps=40,qkv=2:4'), workdir)
  return workdir


@pytest.mark.parametrize('name,packed', [('model.npz', False), ('model.safetensors', False),
                                         ('model.safetensors', True), ('model_dir/', False)])
def test_exported_run_evaluates_to_its_final_metrics_exactly(trained_run, name, packed, tmp_path):
  output = os.path.join(str(tmp_path), name)  # keeps the trailing '/' that asks for a directory
  report = exporting.export(trained_run, output, packed=packed)
  assert report['sparse_kernels'] == 5 and report['step'] == 40
  params, meta = exporting.load(output)
  for path, layer in meta['layers'].items():
    counts = np.asarray(nm.group_counts(tree_paths.flatten(params)[path] != 0, layer['m']))
    assert (counts <= layer['n']).all(), path
  with open(os.path.join(trained_run, 'results.json')) as f:
    final = json.load(f)['eval']
  assert exporting.evaluate(output) == final
  evals = [r for r in metric_writers.read_jsonl(trained_run) if r['split'] == 'eval']
  assert evals[-1]['accuracy'] == final['accuracy']


def test_export_options_and_their_errors(trained_run, tmp_path):
  output = str(tmp_path / 'model.npz')
  exporting.export(trained_run, output, dtype='bfloat16')
  params, _ = exporting.load(output)
  assert all(a.dtype == ml_dtypes.bfloat16 for a in tree_paths.flatten(params).values())
  with pytest.raises(ValueError, match='--overwrite'):
    exporting.export(trained_run, output)
  exporting.export(trained_run, output, overwrite=True)
  with pytest.raises(ValueError, match='--dtype must be one of'):
    exporting.export(trained_run, str(tmp_path / 'x.npz'), dtype='int4')
  with pytest.raises(ValueError, match='--packed'):
    exporting.export(trained_run, str(tmp_path / 'x.npz'), packed=True)
  flat, sparse = model_parameters(np.float32)
  flat['head/kernel'][0, 0] = 1e6
  with pytest.raises(ValueError, match='float16 cannot hold the values of head/kernel'):
    exporting._cast(flat, 'float16')  # pylint: disable=protected-access


def test_tensor_core_metadata_follows_the_nm_pack_layout():
  weight = np.zeros((1, 16), np.float32)  # kept positions per group of 4: (0, 1), (1, 2), (0, 3), (2, 3)
  weight[0, [0, 1, 5, 6, 8, 11, 14, 15]] = np.arange(1, 9)
  values, metadata = tensor_cores.pack(weight)
  np.testing.assert_array_equal(values, [np.arange(1, 9)])
  digits = [0, 1, 1, 2, 0, 3, 2, 3]  # 2 bits each, the j-th at bits 2j..2j+1 (jax.experimental.sparse.nm)
  assert metadata.dtype == np.uint16 and metadata.tolist() == [[sum(d * 4**j for j, d in enumerate(digits))]]
  np.testing.assert_array_equal(tensor_cores.unpack(values, metadata), weight)
  kernel, _ = n_m_kernel((64, 24), 2, 4, (0,), ml_dtypes.bfloat16)  # Flax (in, out); PyTorch layout below
  values, metadata = tensor_cores.pack(np.ascontiguousarray(kernel.T))
  assert values.shape == (24, 32) and metadata.shape == (24, 4)
  np.testing.assert_array_equal(bits(tensor_cores.unpack(values, metadata)), bits(np.ascontiguousarray(kernel.T)))
  with pytest.raises(ValueError, match='not 2:4'):
    tensor_cores.pack(np.ones((2, 16), np.float32))


def test_tensor_core_export_and_its_inference_path(trained_run, tmp_path):
  import ml_collections  # pylint: disable=g-import-not-at-top
  from pgf_sparsity import data as data_lib, models  # pylint: disable=g-import-not-at-top
  output, plain = str(tmp_path / 'model.npz'), str(tmp_path / 'plain.npz')
  exporting.export(trained_run, output, tensor_cores=True)
  exporting.export(trained_run, plain)
  kernels = model_files.tensor_core_kernels(output)
  assert sorted(k.rsplit('/', 2)[1] for k in kernels) == ['key', 'query', 'value']  # the 2:4 kernels (qkv=2:4)
  params, meta = model_files.read(output)
  reference, _ = model_files.read(plain)
  for path, array in reference.items():
    np.testing.assert_array_equal(bits(params[path]), bits(array), err_msg=path)
  assert not tensor_cores.available()  # CPU: the same product, computed densely
  config = ml_collections.ConfigDict(meta['config'])
  model = models.build(config.model, 10)
  x = data_lib.build(config).train_batch(0)['image']
  nested = tree_paths.nest(params)
  expected = model.apply({'params': nested}, x)
  np.testing.assert_allclose(tensor_cores.intercepted_apply(model, {'params': nested}, kernels, x), expected,
                             rtol=1e-5, atol=1e-5)
  # The 2:4 layers really compute from the packed arrays: their kernel parameters are not used.
  without = tree_paths.nest({p: (np.zeros_like(a) if p in kernels else a) for p, a in params.items()})
  np.testing.assert_allclose(tensor_cores.intercepted_apply(model, {'params': without}, kernels, x), expected,
                             rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match='--tensor_cores needs a packed output'):
    exporting.export(trained_run, str(tmp_path / 'dense.safetensors'), tensor_cores=True)
