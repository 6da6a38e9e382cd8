import os
import platform
import subprocess
import sys

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from helpers import ROOT
from pgf_sparsity import nm_mask
from pgf_sparsity.sparsity import native
from pgf_sparsity.sparsity import nm


def reference_mask(w, n, m, axis):
  """Straightforward numpy: stable sort of -|w| in each group; lower index wins ties."""
  a = np.moveaxis(np.abs(np.asarray(w, np.float32)), axis, -1)
  groups = a.reshape(a.shape[:-1] + (a.shape[-1] // m, m))
  order = np.argsort(-groups, axis=-1, kind='stable')
  keep = np.zeros(groups.shape, bool)
  np.put_along_axis(keep, order[..., :n], True, axis=-1)
  return np.moveaxis(keep.reshape(a.shape), -1, axis)


PATTERNS = [(1, 1), (1, 2), (2, 4), (1, 4), (3, 4), (1, 8), (4, 8), (7, 8), (2, 16), (8, 16), (15, 16),
            (1, 32), (16, 32), (8, 32), (31, 32), (4, 64), (32, 64)]


@st.composite
def kernels(draw):
  n, m = draw(st.sampled_from(PATTERNS))
  axis = draw(st.sampled_from([0, 1]))
  groups = draw(st.integers(1, 3))
  other = draw(st.integers(1, 5))
  shape = (groups * m, other) if axis == 0 else (other, groups * m)
  tied = draw(st.booleans())
  elements = (st.integers(-3, 3).map(float) if tied
              else st.floats(-10, 10, allow_nan=False, width=32))
  w = draw(hnp.arrays(np.float32, shape, elements=elements))
  return w, n, m, axis


@settings(max_examples=60, deadline=None)
@given(kernels(), st.sampled_from(['auto'] + sorted(nm.METHODS)))
def test_matches_reference_exactly(case, method):
  w, n, m, axis = case
  assume(method != 'network' or nm.network_compiles_quickly(n, m))
  assume(method != 'kernel' or nm.kernel_unavailable_reason(n, m) is None)
  got = np.asarray(nm_mask(jnp.asarray(w), n, m, axis=axis, method=method))
  np.testing.assert_array_equal(got, reference_mask(w, n, m, axis))
  counts = np.asarray(nm.group_counts(jnp.asarray(got), m, axis))
  assert (counts == n).all()


def method_cases(patterns):
  """(method, n, m) for every method and pattern, but selection networks too large to compile quickly (which
  `choose_method` never picks) and patterns beyond the C++ kernel's lists."""
  return [(method, n, m) for method in sorted(nm.METHODS) for n, m in patterns
          if (method != 'network' or nm.network_compiles_quickly(n, m))
          and (method != 'kernel' or nm.kernel_unavailable_reason(n, m) is None)]


def test_the_mask_kernel_builds_and_loads_here():
  """CI must exercise the C++ mask (which `auto` picks on a CPU), not fall back to XLA's without saying so."""
  assert nm.kernel_unavailable_reason(2, 4) is None
  assert nm.choose_method(8, 64) == 'kernel'


@pytest.mark.parametrize('n,m', [(2, 4), (1, 8), (5, 8), (8, 64), (16, 128), (113, 128), (3, 12)])
def test_the_mask_kernel_on_column_blocks_stacks_and_vmap(n, m):
  # 40 columns: two whole blocks of 16 and a partial one; a stack of kernels under vmap (leading axes); ties.
  rng = np.random.default_rng(n * 1000 + m)
  w = rng.integers(-4, 5, size=(3, 2 * m, 40)).astype(np.float32) * rng.choice([1, 0.5], size=(3, 2 * m, 40))
  got = jax.jit(jax.vmap(lambda x: nm_mask(x, n, m, method='kernel')))(jnp.asarray(w))
  for i in range(3):
    np.testing.assert_array_equal(np.asarray(got[i]), reference_mask(w[i], n, m, 0))


ELSEWHERE = r"""
import sys
import jax.numpy as jnp, numpy as np
sys.path.insert(0, sys.argv[1])
from test_nm import reference_mask
from pgf_sparsity.sparsity import nm
print(nm.kernel_unavailable_reason(8, 64))
for n, m in [(8, 64), (1, 32), (15, 16), (5, 128)]:
  w = np.random.default_rng(m).integers(-3, 4, size=(2 * m, 21)).astype(np.float32)
  assert (np.asarray(nm.nm_mask(jnp.asarray(w), n, m)) == reference_mask(w, n, m, 0)).all(), (n, m)
try:
  nm.nm_mask(jnp.ones((64, 2)), 8, 64, method='kernel')
except ValueError as e:
  print(e)
"""


def run_elsewhere(tmp_path, **env):
  done = subprocess.run([sys.executable, '-c', ELSEWHERE, os.path.dirname(os.path.abspath(__file__))], cwd=ROOT,
                        env=dict(os.environ, PGF_SPARSITY_CACHE=str(tmp_path), **env), capture_output=True,
                        text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  return done.stdout.splitlines()


def test_without_a_compiler_the_masks_come_from_xla(tmp_path):
  lines = run_elsewhere(tmp_path, CXX='no-such-compiler')
  assert lines == ['no C++ compiler (no-such-compiler) to build nm_mask.cc'] * 2
  assert not list(tmp_path.iterdir())  # nothing half-built left behind


def test_a_source_that_does_not_compile_is_reported_by_its_first_error(tmp_path, monkeypatch):
  monkeypatch.setenv('PGF_SPARSITY_CACHE', str(tmp_path / 'cache'))
  source = tmp_path / 'error_cases' / 'broken.cc'  # 'error' in the path too, where gcc repeats it first
  source.parent.mkdir()
  source.write_text('int f() {\n  return undeclared_name;\n}\n')
  with pytest.raises(native.KernelUnavailableError, match=r"^broken.cc did not compile: .*error: .*undeclared_name"):
    native.build(str(source))
  assert not list((tmp_path / 'cache').iterdir())  # nothing half-built left behind


@pytest.mark.skipif(platform.machine() != 'x86_64', reason='the portable build is chosen by an x86-64 -march')
def test_the_mask_kernel_built_without_avx512_is_exact_too(tmp_path):
  assert run_elsewhere(tmp_path, PGF_SPARSITY_MARCH='x86-64-v3') == ['None']
  assert len(list(tmp_path.glob('nm_mask_*.so'))) == 1  # built anew, for that target


def test_the_mask_kernel_refuses_long_lists_in_one_line():
  with pytest.raises(ValueError, match='lists of up to 16; 32:64 needs 32'):
    nm_mask(jnp.ones((64, 2)), 32, 64, method='kernel')
  assert nm.choose_method(32, 64) != 'kernel'


@pytest.mark.parametrize('method,n,m', method_cases([(2, 4), (1, 8), (4, 8), (16, 32), (4, 32), (8, 64), (1, 128),
                                                     (64, 128), (127, 128)]))
def test_all_methods_exact_under_jit_on_ties(method, n, m):
  # Half the entries tie at the same magnitude, with mixed signs: the lower index must win.
  w = jax.random.randint(jax.random.PRNGKey(n * 1000 + m), (2 * m, 6), -2, 3).astype(jnp.float32)
  got = jax.jit(lambda x: nm_mask(x, n, m, method=method))(w)
  np.testing.assert_array_equal(np.asarray(got), reference_mask(w, n, m, 0))


@pytest.mark.parametrize('method,n,m', method_cases([(2, 4), (8, 16), (16, 32), (8, 64), (32, 64)]))
def test_all_methods_exact_at_the_largest_magnitudes(method, n, m):
  # Infinities and the largest finite floats, tied and not: the top of the key range (rank adds one to a key
  # to break ties by index).
  big = np.array([np.inf, -np.inf, np.finfo(np.float32).max, -np.finfo(np.float32).max,
                  np.nextafter(np.finfo(np.float32).max, 0), 1.0, 0.0, -0.0], np.float32)
  w = np.random.default_rng(m).choice(big, size=(2 * m, 3))
  got = jax.jit(lambda x: nm_mask(x, n, m, method=method))(jnp.asarray(w))
  np.testing.assert_array_equal(np.asarray(got), reference_mask(w, n, m, 0))


def test_tie_break_lower_index_wins():
  w = jnp.array([[1.0], [-1.0], [1.0], [0.5]])
  np.testing.assert_array_equal(nm_mask(w, 2, 4)[:, 0], [True, True, False, False])
  np.testing.assert_array_equal(nm_mask(jnp.zeros((8, 1)), 1, 8)[:, 0], [True] + [False] * 7)


def test_column_grouping_groups_along_the_output_axis():
  w = jnp.array([[1., 4., 2., 3.], [9., 0., 0., 8.]])
  np.testing.assert_array_equal(nm_mask(w, 2, 4, axis=1), [[False, True, False, True],
                                                           [True, False, False, True]])


def test_dense_general_kernel_groups_along_contracted_axes():
  w = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 6))  # (heads, head_dim, out)
  got = nm_mask(w, 2, 16, axis=(0, 1))
  flat = reference_mask(np.asarray(w).reshape(32, 6), 2, 16, 0).reshape(4, 8, 6)
  np.testing.assert_array_equal(got, flat)
  # Non-adjacent axes: group along (0, 2) flattened row-major.
  got = nm_mask(w, 1, 8, axis=(0, 2))
  moved = np.transpose(np.asarray(w), (0, 2, 1)).reshape(24, 8)
  ref = np.transpose(reference_mask(moved, 1, 8, 0).reshape(4, 6, 8), (0, 2, 1))
  np.testing.assert_array_equal(got, ref)


def test_mask_has_no_gradient_path():
  w = jax.random.normal(jax.random.PRNGKey(2), (8, 4))
  g = jax.grad(lambda x: (x * nm_mask(x, 1, 4)).sum())(w)
  np.testing.assert_array_equal(g, nm_mask(w, 1, 4).astype(jnp.float32))


@pytest.mark.parametrize('n,m,shape,axis,message', [
    (0, 4, (8, 2), 0, 'need 0 < N <= M'),
    (5, 4, (8, 2), 0, 'need 0 < N <= M'),
    (-1, 4, (8, 2), 0, 'need 0 < N <= M'),
    (1.0, 4, (8, 2), 0, 'needs integers'),
    (1, 4.5, (8, 2), 0, 'needs integers'),
    (True, 4, (8, 2), 0, 'needs integers'),
    (1, 3, (8, 2), 0, 'does not divide'),
    (1, 4, (8, 6), 1, 'does not divide'),
    (1, 4, (8, 2), 2, 'not valid for an array of rank 2'),
    (1, 4, (8, 2), (0, 0), 'repeat'),
])
def test_invalid_input_raises_clear_error(n, m, shape, axis, message):
  with pytest.raises(ValueError, match=message):
    nm_mask(jnp.ones(shape), n, m, axis=axis)


@pytest.mark.parametrize('n,m', [(2, 4), (8, 16), (16, 32), (32, 64)])
def test_rank_counts_once_however_many_consumers_the_mask_has(n, m):
  # In a train step the mask feeds the effective weights, the gradient flow, the stored mask and the flip
  # count; the M passes of the rank count must run once, not once per consumer (nor read the weights again).
  def compares(fn):
    w = jnp.ones((4 * m, 48))
    return jax.jit(fn).lower(w, w).compile().as_text().count(' compare(')

  def mask_alone(w, g):
    del g
    return nm_mask(w, n, m, method='rank')

  def three_consumers(w, g):
    mask = nm_mask(w, n, m, method='rank')
    return jnp.where(mask, w, 0.5 * w), jnp.where(mask, g, 0.5 * g), mask

  assert compares(three_consumers) <= compares(mask_alone) + 3


@pytest.mark.parametrize('n,m', [(1, 64), (1, 128), (127, 128), (1, 256)])
def test_one_round_of_extremes_reads_the_weights_in_fused_loops(n, m):
  # XLA's CPU compiler rewrites a reduction over more than 32 elements into reduce-windows, which do not fuse
  # with the computation of their input: a 1:128 mask then wrote every kernel's keys out and read them back.
  w = jnp.asarray(np.random.default_rng(m).normal(size=(2 * m, 24)), jnp.float32)
  mask_fn = jax.jit(lambda w: nm_mask(w, n, m, method='extremes'))
  assert 'reduce-window' not in mask_fn.lower(w).compile().as_text()
  np.testing.assert_array_equal(np.asarray(mask_fn(w)), reference_mask(np.asarray(w), n, m, 0))


def test_kernels_of_one_shape_and_pattern_trace_their_mask_once(monkeypatch):
  # A Transformer's query, key and value kernels (and its layers' feed-forward kernels) share shapes: a step
  # traces and lowers each distinct mask once, not once per kernel. XLA inlines the calls, so the compiled
  # program is that of the inlined masks.
  traced = []
  method = nm.choose_method(8, 32)
  chosen = nm.METHODS[method]
  monkeypatch.setitem(nm.METHODS, method, lambda groups, n: traced.append(groups.shape) or chosen(groups, n))

  def step(q, k, v, wide):
    return [nm_mask(w, 8, 32) for w in (q, k, v, wide)]

  q = jnp.asarray(np.random.default_rng(0).normal(size=(96, 13)), jnp.float32)  # shapes no other test uses
  wide = jnp.asarray(np.random.default_rng(1).normal(size=(96, 17)), jnp.float32)
  masks = jax.jit(step)(q, -q, 2 * q, wide)
  assert sorted(traced) == [(3, 32, 13), (3, 32, 17)]
  for w, mask in zip((q, -q, 2 * q, wide), masks):
    np.testing.assert_array_equal(np.asarray(mask), reference_mask(np.asarray(w), 8, 32, 0))


def test_unknown_method():
  with pytest.raises(ValueError, match='Unknown mask method'):
    nm_mask(jnp.ones((4, 1)), 1, 4, method='sort')


def test_auto_choice_covers_every_case():
  for n, m in [(2, 4), (1, 8), (1, 32), (1, 128), (16, 32), (64, 128), (127, 128), (8, 1024)]:
    assert nm.choose_method(n, m) in nm.METHODS


@settings(max_examples=40, deadline=None)
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=9), density=st.floats(0, 1), seed=st.integers(0, 99))
def test_count_changed_counts_differing_entries(shape, density, seed):
  # last axes of every length: whole 4-entry words and the plain fallback
  rng = np.random.default_rng(seed)
  a = rng.random(shape) < 0.5
  b = np.where(rng.random(shape) < density, ~a, a)
  count = jax.jit(nm.count_changed)(jnp.asarray(a), jnp.asarray(b))
  assert count.dtype == jnp.float32 and float(count) == float((a != b).sum())


def test_count_changed_rejects_masks_of_different_shapes():
  with pytest.raises(ValueError, match='cannot be compared'):
    nm.count_changed(jnp.ones((4, 8), bool), jnp.ones((8, 4), bool))
