"""A run's static pieces, built once from a validated config and the data's spec: the model, the task, the
recipe bound to the model's parameters, the optimizer and learning-rate schedule, and the device mesh.

The train state is initialised here, placed as sharding.py says (data parallel, or FSDP along the mesh's
'fsdp' axis); the step functions (steps.py) close over an Experiment.
"""
import dataclasses
import functools
from typing import Any, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from pgf_sparsity import config_lib
from pgf_sparsity import data as data_lib
from pgf_sparsity import models
from pgf_sparsity import tasks
from pgf_sparsity.data import DataSpec
from pgf_sparsity.sparsity import BoundRecipe, Recipe
from pgf_sparsity.training import optim
from pgf_sparsity.training import sharding
from pgf_sparsity.training import validation


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  masks: Any  # params-shaped, None at dense leaves: the masks of the last sparse step (all True before)
  rng: jax.Array
  nonfinite_step: jax.Array  # first step with a non-finite loss or gradient, -1 if none


@dataclasses.dataclass(frozen=True)
class Experiment:
  config: Any
  spec: DataSpec
  model: nn.Module
  task: tasks.Task
  recipe: BoundRecipe
  tx: optax.GradientTransformationExtraArgs
  learning_rate: optax.Schedule
  total_steps: int
  mesh: Mesh
  dummy_inputs: Tuple[jax.Array, ...]  # a batch of one, for initialisation and shape analysis

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  @property
  def batch_sharding(self) -> NamedSharding:
    return NamedSharding(self.mesh, sharding.batch_spec())

  @functools.cached_property
  def state_shapes(self) -> TrainState:
    """The train state's shapes and dtypes, unsharded (nothing allocated)."""
    return jax.eval_shape(self.init_state, jax.random.PRNGKey(0))

  @functools.cached_property
  def state_sharding(self) -> TrainState:
    return state_shardings(self.mesh, self.state_shapes, self.recipe)

  def init_state(self, rng) -> TrainState:
    init_rng, state_rng = jax.random.split(rng)
    params = self.model.init(init_rng, *self.dummy_inputs)['params']
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=self.tx.init(params),
                      masks=self.recipe.all_kept_masks(params), rng=state_rng,
                      nonfinite_step=jnp.full((), -1, jnp.int32))

  def initial_state(self) -> TrainState:
    return jax.jit(self.init_state, out_shardings=self.state_sharding)(jax.random.PRNGKey(self.config.seed))

  def abstract_state(self) -> TrainState:
    return jax.tree.map(lambda s, where: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=where),
                        self.state_shapes, self.state_sharding)

  def shard(self, batch):
    """A host-local batch as one global array per key, split over every device of the mesh."""
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(self.batch_sharding, x), batch)


def state_shardings(mesh: Mesh, shapes: TrainState, recipe: BoundRecipe) -> TrainState:
  """The train state's NamedShardings on `mesh`: parameters, masks and optimizer state as sharding.py says."""
  replicated = NamedSharding(mesh, P())
  grouped = {path: axes for path, (_, axes) in recipe.kernels.items()}
  specs = sharding.param_specs(shapes.params, mesh.shape['fsdp'], grouped)
  like = functools.partial(sharding.like_params, mesh, abstract_params=shapes.params, specs=specs)
  return TrainState(step=replicated, params=like(shapes.params), opt_state=like(shapes.opt_state),
                    masks=like(shapes.masks), rng=replicated, nonfinite_step=replicated)


def total_steps_of(config, spec: DataSpec) -> int:
  steps = (config.total_steps if config.total_steps is not None
           else int(round(config.num_epochs * spec.steps_per_epoch)))
  if steps <= 0:
    raise ValueError(f'The run has {steps} training steps; raise total_steps or num_epochs.')
  return steps


def build(config, spec: DataSpec, recipe: Recipe) -> Experiment:
  """Binds the recipe to the model's abstract parameters (every pattern checked against every kernel)."""
  total_steps = total_steps_of(config, spec)
  model = models.build(config.model, spec.output_size)
  task = tasks.build(config, spec, model)
  dummy = task.dummy_inputs(spec.input_shapes)
  abstract_params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *dummy)['params'])
  bound = recipe.bind(abstract_params, total_steps, spec.steps_per_epoch)
  bound.check_layers(model.apply, abstract_params, *dummy)
  learning_rate = optim.learning_rate_schedule(config.optimizer, total_steps, spec.steps_per_epoch)
  tx = optim.make_optimizer(config.optimizer, bound.transform(), learning_rate)
  mesh = sharding.make_mesh(config.mesh)
  return Experiment(config, spec, model, task, bound, tx, learning_rate, total_steps, mesh, dummy)


def from_config(config) -> Tuple[Experiment, data_lib.Pipeline]:
  """(Experiment, data pipeline) of a config, validated as train_and_evaluate validates it (for tools and
  benchmarks that need no workdir)."""
  config = config_lib.complete(config)
  recipe = validation.check_config(config)
  data = data_lib.build(config)
  return build(config, data.spec, recipe), data
