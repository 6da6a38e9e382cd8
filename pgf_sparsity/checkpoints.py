"""orbax checkpointing of the train state: periodic saves, keep-last-k, resume from the workdir."""
import os
from typing import Any, Optional

import orbax.checkpoint as ocp


class Checkpointer:

  def __init__(self, workdir: str, max_to_keep: int = 3):
    self.manager = ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, 'checkpoints')),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, step: int, state: Any) -> None:
    self.manager.save(step, args=ocp.args.StandardSave(state))

  def restore(self, abstract_state: Any, step: Optional[int] = None) -> Any:
    step = self.manager.latest_step() if step is None else step
    return self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state))

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
