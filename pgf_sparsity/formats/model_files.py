"""Files of exported N:M models, chosen by the output's extension; numpy only (orbax where asked for).

  .npz          the packed format: kept values plus bit-packed positions or bitmasks (nm_packing.py), or
                for 2:4 kernels on request the form of NVIDIA's sparse tensor cores (tensor_cores.py)
  .safetensors  dense with exact zeros, in PyTorch's layout and names (Linear weights (out, in), so that
                `torch.sparse.to_sparse_semi_structured` takes a 2:4 weight as it is); or, with packed=True,
                the packed arrays of the .npz format under the Flax parameter paths
  a directory   Flax parameters (dense with exact zeros) as an orbax checkpoint, for JAX users

Every file carries the same metadata: format, version, step, dtype, the run's config, and per parameter its
Flax path, shape, dtype, PyTorch name and layout, and for sparse kernels N, M, grouping axes and encoding.
`read` returns Flax-path parameters (dense with zeros) and the metadata whatever the format;
`read_torch_layout` returns PyTorch-named, PyTorch-layout arrays from either safetensors variant.
"""
import json
import math
import zipfile
from typing import Any, Dict, Tuple

import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy)
import numpy as np
from etils import epath

from pgf_sparsity.formats import file_paths
from pgf_sparsity.formats import nm_packing
from pgf_sparsity.formats import tensor_cores

FORMAT = 'pgf_sparsity.nm_model'
VERSION = 2
DTYPES = ('float32', 'bfloat16', 'float16')
_META_KEY = 'pgf_sparsity'
_RAW = {2: np.uint16, 4: np.uint32}  # packed .npz arrays are stored as their bit patterns
Flat = Dict[str, np.ndarray]


class ModelFileError(ValueError):
  """A file that is not a readable pgf_sparsity model, or metadata that does not fit its arrays."""


def torch_name(path: str) -> str:
  """'Transformer/encoderblock_0/mlp/fc1/kernel' -> 'Transformer.encoderblock_0.mlp.fc1.weight'."""
  *module, leaf = path.split('/')
  return '.'.join(module + [{'kernel': 'weight', 'scale': 'weight', 'embedding': 'weight'}.get(leaf, leaf)])


def torch_layout(path: str, shape, in_ndim: int = 1) -> str:
  """'linear' (Flax (in..., out...) -> PyTorch (out, in)), 'conv' ((h, w, in, out) -> (out, in, h, w)), or
  'same'."""
  if not path.endswith('/kernel'):
    return 'same'
  return 'conv' if len(shape) == 4 and in_ndim == 1 else 'linear'


def to_torch(array: np.ndarray, layout: str, in_ndim: int) -> np.ndarray:
  if layout == 'linear':
    return np.ascontiguousarray(array.reshape(math.prod(array.shape[:in_ndim]), -1).T)
  if layout == 'conv':
    return np.ascontiguousarray(array.transpose(3, 2, 0, 1))
  return array


def from_torch(array: np.ndarray, layout: str, shape) -> np.ndarray:
  if layout == 'linear':
    return np.ascontiguousarray(array.T).reshape(shape)
  if layout == 'conv':
    return np.ascontiguousarray(array.transpose(2, 3, 1, 0))
  return array


def describe(flat: Flat, sparse: Dict[str, Dict[str, Any]], **extra) -> Dict[str, Any]:
  """The metadata of a model: `sparse` maps kernel paths to {'n', 'm', 'axes', 'in_ndim'}."""
  params = {}
  for path, array in flat.items():
    in_ndim = sparse.get(path, {}).get('in_ndim', 1)
    params[path] = {'shape': list(array.shape), 'dtype': array.dtype.name, 'torch_name': torch_name(path),
                    'layout': torch_layout(path, array.shape, in_ndim), 'in_ndim': in_ndim}
  layers = {p: dict(s, axes=list(s['axes']), encoding=s.get('encoding') or nm_packing.best_encoding(s['n'], s['m']))
            for p, s in sparse.items()}
  return {'format': FORMAT, 'version': VERSION, 'params': params, 'layers': layers, **extra}


def write(path: str, flat: Flat, meta: Dict[str, Any], packed: bool = False) -> None:
  """Writes dense-with-zeros parameters `flat` ({Flax path: array}) described by `meta` (see describe).
  `path` may be local or a URL that etils.epath can write (gs://...)."""
  path = str(path)
  if path.endswith('.npz'):
    _write_packed_npz(path, flat, meta)
  elif path.endswith('.safetensors'):
    _write_safetensors(path, flat, meta, packed)
  else:
    _write_orbax(path, flat, meta)


def read(path: str) -> Tuple[Flat, Dict[str, Any]]:
  """A model file of any format (.npz, .safetensors dense or packed, an orbax directory).

  Args:
    path: the file (or directory), local or a URL etils.epath reads.

  Returns:
    ({Flax path: dense numpy array with exact zeros at pruned weights}, metadata).

  Raises:
    ModelFileError: a missing, truncated or corrupted file, another format version, or weights that are
      not exactly the N:M the metadata states.
  """
  path = str(path)
  if not epath.Path(path).exists():
    raise ModelFileError(f'{path!r} does not exist.')
  if path.endswith('.npz'):
    return _read_packed_npz(path)
  if path.endswith('.safetensors'):
    return _read_safetensors(path)
  return _read_orbax(path)


def _check_meta(meta, path: str) -> Dict[str, Any]:
  if not isinstance(meta, dict) or meta.get('format') != FORMAT:
    found = meta.get('format') if isinstance(meta, dict) else None
    raise ModelFileError(f'{path!r} is not a pgf_sparsity model (format {found!r}).')
  if meta.get('version') != VERSION:
    raise ModelFileError(f'{path!r} has format version {meta.get("version")!r}; this version of pgf_sparsity reads '
                         f'version {VERSION}.')
  return meta


def _packed_arrays(flat: Flat, meta) -> Dict[str, np.ndarray]:
  arrays = {}
  for p, array in flat.items():
    layer = meta['layers'].get(p)
    if layer is None:
      arrays[f'dense/{p}'] = array
      continue
    kernel = _pack_layer(p, array, layer)
    arrays[f'values/{p}'], arrays[f'code/{p}'] = kernel.values, kernel.code
  return arrays


def _pack_layer(path: str, array: np.ndarray, layer):
  """The kept weights are the non-zeros plus, in groups with fewer than N, the lowest-index zeros."""
  if layer['encoding'] == 'nvidia_2_4':
    try:
      values, metadata = tensor_cores.pack(np.ascontiguousarray(array.T))
    except ValueError as e:
      raise ModelFileError(f'{path} is not exactly 2:4: {e}.') from None
    return nm_packing.PackedKernel(values, metadata, 'nvidia_2_4', 2, 4, (0,), array.shape)
  try:
    return nm_packing.pack_exact(array, layer['n'], layer['m'], layer['axes'], layer['encoding'])
  except ValueError:
    raise ModelFileError(f'{path} is not exactly {layer["n"]}:{layer["m"]}: some groups have more non-zeros.'
                         ) from None


def _unpacked(path: str, arrays: Dict[str, np.ndarray], meta) -> Flat:
  flat = {}
  for p, spec in meta['params'].items():
    try:
      if meta['layers'].get(p, {}).get('encoding') == 'nvidia_2_4':
        flat[p] = np.ascontiguousarray(tensor_cores.unpack(arrays[f'values/{p}'], arrays[f'code/{p}']).T)
      elif p in meta['layers']:
        layer = meta['layers'][p]
        flat[p] = nm_packing.unpack(nm_packing.PackedKernel(
            arrays[f'values/{p}'], arrays[f'code/{p}'], layer['encoding'], layer['n'], layer['m'],
            tuple(layer['axes']), tuple(spec['shape'])))
      else:
        flat[p] = arrays[f'dense/{p}']
    except KeyError:
      raise ModelFileError(f'{path!r} lacks the arrays of {p}.') from None
    except ValueError as e:
      raise ModelFileError(f'{path!r} is corrupted at {p}: {e}.') from None
    if list(flat[p].shape) != spec['shape'] or flat[p].dtype.name != spec['dtype']:
      raise ModelFileError(f'{path!r} is corrupted at {p}: {flat[p].dtype.name} {list(flat[p].shape)} where '
                           f'the metadata says {spec["dtype"]} {spec["shape"]}.')
  return flat


def _write_packed_npz(path: str, flat: Flat, meta) -> None:
  arrays = {k: (v if k.startswith('code/') else v.view(_RAW[v.itemsize]))
            for k, v in _packed_arrays(flat, meta).items()}
  arrays['meta'] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
  with epath.Path(path).open('wb') as f:
    np.savez(f, **arrays)


def _packed_npz_contents(path: str):
  try:
    with epath.Path(path).open('rb') as f, np.load(f, allow_pickle=False) as data:
      arrays = {k: data[k] for k in data.files}
    meta = _check_meta(json.loads(arrays.pop('meta').tobytes().decode()), path)
  except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, UnicodeDecodeError) as e:
    if isinstance(e, ModelFileError):
      raise
    raise ModelFileError(f'{path!r} is not a readable pgf_sparsity model (truncated or not an .npz: '
                         f'{type(e).__name__}).') from None
  dtypes = {p: np.dtype(s['dtype']) for p, s in meta['params'].items()}
  for key, array in arrays.items():
    kind, p = key.split('/', 1)
    if kind != 'code' and p in dtypes:
      arrays[key] = array.view(dtypes[p])
  return arrays, meta


def _read_packed_npz(path: str) -> Tuple[Flat, Dict[str, Any]]:
  arrays, meta = _packed_npz_contents(path)
  return _unpacked(path, arrays, meta), meta


def tensor_core_kernels(path: str) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
  """The 2:4 kernels that a packed file holds in the form of NVIDIA's sparse tensor cores.

  Args:
    path: a packed file (.npz, or .safetensors written with --packed) exported with --tensor_cores.

  Returns:
    {Flax kernel path: (values (out, in/2), uint16 metadata (out, in/16))}, for
    tensor_cores.intercepted_apply.
  """
  if path.endswith('.npz'):
    arrays, meta = _packed_npz_contents(path)
  elif path.endswith('.safetensors'):
    arrays, meta = _safetensors_contents(path)
  else:
    return {}
  return {p: (arrays[f'values/{p}'], arrays[f'code/{p}'])
          for p, layer in meta['layers'].items() if layer['encoding'] == 'nvidia_2_4'}


def packed_kernels(path: str) -> Dict[str, nm_packing.PackedKernel]:
  """The file's N:M kernels in packed form: as stored where the file is packed (.npz, packed .safetensors),
  packed from the dense values otherwise; 2:4 kernels in the tensor-core form are repacked by position.

  Args:
    path: a file written by `write`.

  Returns:
    {Flax kernel path: PackedKernel}.
  """
  contents = None
  if path.endswith('.npz'):
    contents = _packed_npz_contents(path)
  elif path.endswith('.safetensors'):
    contents = _safetensors_contents(path)
    contents = contents if contents[1].get('packed') else None
  if contents is None:
    flat, meta = read(path)
    return {p: _pack_layer(p, flat[p], dict(layer, encoding='index')) for p, layer in meta['layers'].items()}
  arrays, meta = contents
  kernels = {}
  for p, layer in meta['layers'].items():
    if layer['encoding'] == 'nvidia_2_4':
      dense = _unpacked(path, arrays, {'params': {p: meta['params'][p]}, 'layers': {p: layer}})[p]
      kernels[p] = _pack_layer(p, dense, dict(layer, encoding='index'))
    else:
      kernels[p] = nm_packing.PackedKernel(arrays[f'values/{p}'], arrays[f'code/{p}'], layer['encoding'],
                                           layer['n'], layer['m'], tuple(layer['axes']),
                                           tuple(meta['params'][p]['shape']))
  return kernels


def _write_safetensors(path: str, flat: Flat, meta, packed: bool) -> None:
  from safetensors.numpy import save  # pylint: disable=g-import-not-at-top
  if packed:
    tensors = _packed_arrays(flat, meta)
  else:
    tensors = {meta['params'][p]['torch_name']: _torch_array(a, meta['params'][p]) for p, a in flat.items()}
  epath.Path(path).write_bytes(save(tensors, metadata={_META_KEY: json.dumps(dict(meta, packed=packed))}))


# safetensors dtype names; safetensors.numpy.load lacks BF16, so arrays are read from `deserialize` here.
_SAFETENSORS_DTYPES = {'F64': np.float64, 'F32': np.float32, 'F16': np.float16, 'BF16': ml_dtypes.bfloat16,
                       'I64': np.int64, 'I32': np.int32, 'I16': np.int16, 'I8': np.int8, 'U64': np.uint64,
                       'U32': np.uint32, 'U16': np.uint16, 'U8': np.uint8, 'BOOL': np.bool_}


def _safetensors_file(path: str):
  """(header metadata, {name: array}) of a safetensors file, read through epath (so that URLs work too)."""
  from safetensors import deserialize  # pylint: disable=g-import-not-at-top
  data = epath.Path(path).read_bytes()
  header_length = int.from_bytes(data[:8], 'little')  # the format: u64 length, JSON header, tensor bytes
  header = json.loads(data[8:8 + header_length]) if len(data) >= 8 + header_length else {}
  tensors = {name: np.frombuffer(t['data'], _SAFETENSORS_DTYPES[t['dtype']]).reshape(t['shape'])
             for name, t in deserialize(data)}
  return header.get('__metadata__') or {}, tensors


def safetensors_arrays(path: str) -> Dict[str, np.ndarray]:
  """Every tensor of a safetensors file, with numpy alone.

  Args:
    path: any safetensors file (bfloat16 tensors included, as ml_dtypes arrays).

  Returns:
    {tensor name: numpy array}.
  """
  from safetensors import SafetensorError  # pylint: disable=g-import-not-at-top
  try:
    return _safetensors_file(path)[1]
  except (SafetensorError, ValueError, KeyError) as e:
    raise ModelFileError(f'{path!r} is not a readable safetensors file ({type(e).__name__}).') from None


def _safetensors_contents(path: str):
  """(tensors, metadata) of a pgf_sparsity safetensors file."""
  from safetensors import SafetensorError  # pylint: disable=g-import-not-at-top
  try:
    header_meta, tensors = _safetensors_file(path)
    meta = json.loads(header_meta.get(_META_KEY, '{}'))
  except (SafetensorError, OSError, ValueError, KeyError) as e:
    raise ModelFileError(f'{path!r} is not a readable safetensors file (truncated or corrupted: '
                         f'{type(e).__name__}).') from None
  return tensors, _check_meta(meta, path)


def _read_safetensors(path: str) -> Tuple[Flat, Dict[str, Any]]:
  tensors, meta = _safetensors_contents(path)
  if meta.get('packed'):
    return _unpacked(path, tensors, meta), meta
  flat = {}
  for p, spec in meta['params'].items():
    if spec['torch_name'] not in tensors:
      raise ModelFileError(f'{path!r} lacks {spec["torch_name"]} ({p}).')
    flat[p] = from_torch(tensors[spec['torch_name']], spec['layout'], tuple(spec['shape']))
  return flat, meta


def read_torch_layout(path: str) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
  """Either safetensors variant in PyTorch's names and layout, with numpy alone (no JAX).

  Args:
    path: a .safetensors file written by `write`.

  Returns:
    ({PyTorch name: array in PyTorch's layout, zeros at pruned weights}, metadata).
  """
  flat, meta = _read_safetensors(path)
  return {meta['params'][p]['torch_name']: _torch_array(a, meta['params'][p]) for p, a in flat.items()}, meta


def _torch_array(array: np.ndarray, spec) -> np.ndarray:
  return to_torch(array, spec['layout'], spec['in_ndim'])


def _write_orbax(path: str, flat: Flat, meta) -> None:
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from pgf_sparsity.sparsity import tree_paths  # pylint: disable=g-import-not-at-top
  directory = file_paths.absolute(path)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(directory, tree_paths.nest(dict(flat)))
  (directory / 'pgf_sparsity_meta.json').write_text(json.dumps(meta))


def _read_orbax(path: str) -> Tuple[Flat, Dict[str, Any]]:
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from pgf_sparsity.sparsity import tree_paths  # pylint: disable=g-import-not-at-top
  from pgf_sparsity.training import checkpoints  # pylint: disable=g-import-not-at-top
  checkpoints.quiet_abandoned_orbax_work()
  try:
    directory = file_paths.absolute(path)
    meta = _check_meta(json.loads((directory / 'pgf_sparsity_meta.json').read_text()), path)
    with ocp.StandardCheckpointer() as checkpointer:
      nested = checkpointer.restore(directory)
  except ModelFileError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (any orbax read failure: the directory is unusable)
    raise ModelFileError(f'{path!r} is not a readable pgf_sparsity model directory ({type(e).__name__}).') from None
  flat = {p: np.asarray(a) for p, a in tree_paths.flatten(nested).items()}
  return _unpacked(path, {f'dense/{p}': a for p, a in flat.items()}, dict(meta, layers={})), meta
