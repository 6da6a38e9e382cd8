"""A workdir given as a URL: every file of a run, its resumption and its export goes through etils.epath,
none through the local filesystem by the URL's string."""
import os

import numpy as np
import pytest
from etils import epath
from etils.epath import gpath

from helpers import load_config
from pgf_sparsity.formats import exporting
from pgf_sparsity.sparsity import tree_paths
from pgf_sparsity.training import metric_writers, train

SCHEME = 'pgftest://'


class _BucketOnDisk(gpath.PosixGPath):
  """`pgftest://bucket/x` stands for ROOT/bucket/x: a URL scheme that needs no network. Code that turned the
  URL's string into a local path itself (os.path, open) would write under ./pgftest:/ instead."""
  root = ''

  def __new__(cls, *parts):
    parts = [os.fspath(p) for p in parts]
    if parts and parts[0].startswith(SCHEME):
      parts[0] = os.path.join(cls.root, parts[0][len(SCHEME):])
    return super().__new__(cls, *parts)


epath.register_path_cls(SCHEME)(_BucketOnDisk)


@pytest.mark.usefixtures('shared_compiled_steps')
def test_run_resume_and_export_write_only_inside_a_url_workdir(tmp_path, monkeypatch):
  _BucketOnDisk.root = str(tmp_path / 'remote')
  (tmp_path / 'cwd').mkdir()
  monkeypatch.chdir(tmp_path / 'cwd')
  workdir = SCHEME + 'bucket/run'
  config = load_config('digits', 'recipe=static,steps=20')
  config.checkpoint_every_steps, config.log_every_steps = 10, 5
  train.train_and_evaluate(config, workdir, max_steps_this_run=10)
  state, _ = train.train_and_evaluate(config, workdir)  # resumes from the checkpoint at step 10
  assert int(state.step) == 20
  exporting.export(workdir, workdir + '/model.npz')
  exporting.export(workdir, workdir + '/model.safetensors')

  local = tmp_path / 'remote' / 'bucket' / 'run'
  names = set(os.listdir(local))
  assert {'config.json', 'run_info.json', 'metrics.jsonl', 'results.json', 'checkpoints', 'model.npz',
          'model.safetensors'} <= names, names
  assert any(n.startswith('events.out.tfevents') for n in names), names  # TensorBoard, through its URL
  assert sorted(os.listdir(local / 'checkpoints')) == ['10', '20']
  assert [r['step'] for r in metric_writers.read_jsonl(workdir) if r['split'] == 'train'] == [5, 10, 15, 20]
  assert os.listdir(tmp_path / 'cwd') == []  # nothing written by the URL's string as a local path
  assert sorted(os.listdir(tmp_path)) == ['cwd', 'remote']
  params, _ = exporting.load(workdir + '/model.npz')
  final = tree_paths.flatten(params)
  assert set(final) == set(tree_paths.flatten(state.params))
  assert all(np.isfinite(v).all() for v in final.values())
