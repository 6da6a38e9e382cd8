"""The house rules that keep the code readable: one default per config key, the method importing nothing
outside its folder, no import circle, a package laid out by role, and a front page whose code runs."""
import ast
import os
import re
import subprocess
import sys

import ml_collections
import pytest

from helpers import ROOT, load_config
from pgf_sparsity import config_lib

PACKAGE = os.path.join(ROOT, 'pgf_sparsity')


def _modules():
  for directory, _, names in os.walk(PACKAGE):
    for name in names:
      if name.endswith('.py'):
        path = os.path.join(directory, name)
        yield os.path.relpath(path, ROOT), ast.parse(open(path).read())


def _table_keys():
  return {key.split('.')[-1] for key, _, _ in config_lib.reference()}


def test_no_module_sets_a_default_of_a_config_key_outside_config_lib():
  """`x.get('key', default)` or `config.get(...)` on a config key anywhere but config_lib: a second default."""
  keys, offenders = _table_keys(), []
  for path, tree in _modules():
    if path.endswith('config_lib.py'):
      continue
    for node in ast.walk(tree):
      if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == 'get'):
        continue
      target = ast.unparse(node.func.value)
      first = node.args[0] if node.args else None
      names_a_key = isinstance(first, ast.Constant) and first.value in keys and len(node.args) > 1
      if target.endswith('config') or target in ('opt', 'init', 'cfg', 'dataset') or names_a_key:
        offenders.append(f'{path}:{node.lineno} {ast.unparse(node)}')
  assert not offenders, offenders


def test_every_key_the_code_reads_has_exactly_one_default(tmp_path, monkeypatch):
  """Records every key a run reads from its config (a digits run, a Shakespeare run) and checks each
  against the table; the table itself holds each dotted key once."""
  from pgf_sparsity.training import train  # pylint: disable=g-import-not-at-top
  dotted = [key for key, _, _ in config_lib.reference()]
  assert len(dotted) == len(set(dotted))
  read = set()
  original = ml_collections.ConfigDict.__getitem__

  def recording(self, key):
    read.add(key)
    return original(self, key)

  configs = {name: load_config(name, 'runlocal') for name in ('digits', 't5_shakespeare')}
  monkeypatch.setattr(ml_collections.ConfigDict, '__getitem__', recording)  # what the run reads, not the file
  for name, config in configs.items():
    config.total_steps = 2
    train.train_and_evaluate(config, str(tmp_path / name))
  model_keys = set()
  from pgf_sparsity import models  # pylint: disable=g-import-not-at-top
  for build in models.MODELS.values():
    model_keys |= set(sys.modules[build.__module__].DEFAULTS) | {'name', 'variant'}
  blocks = {'dataset', 'model', 'optimizer', 'sparsity', 'init', 'mesh', 'vocab', 'randaugment', 'targets'}
  target_names = {name for config in configs.values() for name in config.sparsity.targets}  # free-form names
  unknown = read - _table_keys() - model_keys - blocks - target_names - {'regex', 'n', 'm', 'in_ndim'}
  assert not unknown, f'keys read with no default in config_lib: {sorted(unknown)}'
  assert {'nonfinite', 'diagnostics_every_steps', 'grad_clip_norm', 'chunk_length', 'beam_size'} <= read


@pytest.mark.parametrize('name', sorted(n for n in os.listdir(os.path.join(ROOT, 'configs')) if n.endswith('.py')))
def test_every_config_is_complete_and_any_key_can_be_overridden(name):
  config = load_config(name[:-3], 'runlocal')
  assert config.to_dict() == config_lib.complete(config).to_dict()
  for key, default, _ in config_lib.reference():
    if not key.startswith('dataset['):
      node = config
      for part in key.split('.'):
        node = node[part]  # every key is present, so `--config.<key>=...` reaches it


def test_unknown_keys_are_refused_with_their_path():
  config = load_config('digits', 'runlocal').to_dict()
  config['optimizer']['lerning_rate'] = 1e-3
  with pytest.raises(ValueError, match='optimizer.lerning_rate'):
    config_lib.complete(config)
  config = load_config('digits', 'runlocal').to_dict()
  config['widht'] = 3
  with pytest.raises(ValueError, match='widht'):
    config_lib.complete(config)


def test_the_config_reference_is_generated_from_the_table():
  printed = subprocess.run([sys.executable, 'scripts/make_config_docs.py'], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout
  with open(os.path.join(ROOT, 'docs', 'config.md')) as f:
    assert f.read() == printed


def _imports(tree):
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module:
      yield node.module, [a.name for a in node.names]
    elif isinstance(node, ast.Import):
      for alias in node.names:
        yield alias.name, []


def _package_imports():
  """{module: {package modules it imports}}, from every import statement (top level or not)."""
  graph = {}
  for path, tree in _modules():
    name = path[:-3].replace(os.sep, '.').removesuffix('.__init__')
    deps = set()
    for module, names in _imports(tree):
      if not module.startswith('pgf_sparsity'):
        continue
      for item in names or [None]:
        candidate = f'{module}.{item}' if item else module
        deps.add(candidate if os.path.exists(os.path.join(ROOT, *candidate.split('.')) + '.py') else module)
    graph[name] = deps - {name}
  return graph


def test_the_method_imports_nothing_outside_its_folder():
  outside = {m: sorted(d for d in deps if not d.startswith('pgf_sparsity.sparsity'))
             for m, deps in _package_imports().items() if m.startswith('pgf_sparsity.sparsity')}
  assert not any(outside.values()), outside


@pytest.mark.parametrize('folder,may_import', [
    ('models', {'sparsity', 'models'}),
    ('data', {'data'}),
    ('tasks', {'tasks', 'data'}),  # the vocabulary's conventions (EOS) come from data
])
def test_data_flows_one_way(folder, may_import):
  """Models know nothing of training, data nothing of models or tasks, tasks nothing of models or the loop."""
  for module, deps in _package_imports().items():
    if module.startswith(f'pgf_sparsity.{folder}'):
      folders = {d.split('.')[1] for d in deps if d.count('.') >= 1}
      assert folders <= may_import, (module, sorted(folders - may_import))


def test_no_import_circle_between_modules():
  graph = _package_imports()
  state = {}

  def visit(node, stack):
    state[node] = 'open'
    for dep in graph.get(node, ()):
      if dep in graph and node not in (dep + '.__init__',) and not node.startswith(dep + '.'):
        assert state.get(dep) != 'open', ' -> '.join(stack + [node, dep])
        if dep not in state:
          visit(dep, stack + [node])
    state[node] = 'done'

  for module in graph:
    if module not in state:
      visit(module, [])


def test_the_top_level_holds_at_most_six_modules_and_every_folder_a_role():
  top = sorted(n for n in os.listdir(PACKAGE) if n.endswith('.py'))
  assert len(top) <= 6, top
  folders = {n for n in os.listdir(PACKAGE) if os.path.isdir(os.path.join(PACKAGE, n)) and n != '__pycache__'}
  assert folders == {'sparsity', 'models', 'data', 'tasks', 'training', 'formats', 'analysis', 'inference'}
  for folder in folders:
    assert ast.get_docstring(ast.parse(open(os.path.join(PACKAGE, folder, '__init__.py')).read())), folder


def test_the_readme_snippet_runs_and_trains_to_exact_n_m():
  """The front page's library example, executed as written: the final masks leave exactly 1 of 8."""
  readme = open(os.path.join(ROOT, 'README.md')).read()
  snippet = re.search(r'## PGF in your own model.*?```python\n(.*?)```', readme, re.S).group(1)
  namespace = {}
  exec(compile(snippet, 'README.md', 'exec'), namespace)  # pylint: disable=exec-used
  sp, params = namespace['sp'], namespace['params']
  masks = sp.masks(params, sp.final_plan())
  kept = masks['kernel'].reshape(4, 8, 64).sum(axis=1)
  assert (kept == 1).all()
  assert float(sp.beta(99, sp.plan(99))) < 0.05  # decayed towards 0 over the run


def test_readme_and_docs_point_at_nothing_outside_the_repository():
  texts = [open(os.path.join(ROOT, 'README.md')).read()]
  docs = os.path.join(ROOT, 'docs')
  texts += [open(os.path.join(docs, n)).read() for n in os.listdir(docs)]
  for path, tree in _modules():
    texts.append(open(os.path.join(ROOT, path)).read())
  for text in texts:
    assert '../shared' not in text and 'SPEC.md' not in text and 'SPEC section' not in text
  links = re.findall(r'\]\(([^)#:]+)(?:#[^)]*)?\)', '\n'.join(texts[:1]))
  for link in links:
    assert os.path.exists(os.path.join(ROOT, link)), link
  for name in os.listdir(docs):
    for link in re.findall(r'\]\(([^)#:]+)(?:#[^)]*)?\)', open(os.path.join(docs, name)).read()):
      assert os.path.exists(os.path.join(docs, link)), (name, link)
  assert sum(1 for _ in open(os.path.join(ROOT, 'README.md'))) <= 150
