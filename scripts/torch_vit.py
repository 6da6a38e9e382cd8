"""The benchmark ViT in PyTorch, the same architecture and training step as pgf_sparsity's dense step, for
scripts/bench_train_step.py's side-by-side comparison (torch is an optional benchmark dependency).

Patch embedding (conv, stride = patch), learned position embedding, pre-LN blocks (LayerNorm eps 1e-6,
nn.MultiheadAttention, GELU (tanh, as flax's default) MLP), final LayerNorm, mean pooling, linear head;
sigmoid cross-entropy on one-hot labels, gradient-norm clip, AdamW.
"""
import torch
from torch import nn


class Block(nn.Module):

  def __init__(self, width: int, heads: int, mlp_dim: int):
    super().__init__()
    self.norm1 = nn.LayerNorm(width, eps=1e-6)
    self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
    self.norm2 = nn.LayerNorm(width, eps=1e-6)
    self.mlp = nn.Sequential(nn.Linear(width, mlp_dim), nn.GELU(approximate='tanh'), nn.Linear(mlp_dim, width))

  def forward(self, x):
    y = self.norm1(x)
    x = x + self.attention(y, y, y, need_weights=False)[0]
    return x + self.mlp(self.norm2(x))


class ViT(nn.Module):

  def __init__(self, image_size: int, patch: int, width: int, depth: int, heads: int, mlp_dim: int, classes: int):
    super().__init__()
    self.embedding = nn.Conv2d(3, width, patch, stride=patch)
    self.pos_embedding = nn.Parameter(torch.randn(1, (image_size // patch) ** 2, width) * 0.02)
    self.blocks = nn.Sequential(*[Block(width, heads, mlp_dim) for _ in range(depth)])
    self.norm = nn.LayerNorm(width, eps=1e-6)
    self.head = nn.Linear(width, classes)

  def forward(self, images):
    x = self.embedding(images).flatten(2).transpose(1, 2) + self.pos_embedding
    return self.head(self.norm(self.blocks(x)).mean(dim=1))


def make_step(model: nn.Module, classes: int, learning_rate: float = 1e-3, weight_decay: float = 0.01):
  """A training step (forward, sigmoid loss, backward, clip 1.0, AdamW) on a fixed batch."""
  optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
  loss_fn = nn.BCEWithLogitsLoss(reduction='sum')

  def step(images, labels):
    optimizer.zero_grad(set_to_none=True)
    targets = nn.functional.one_hot(labels, classes).float()
    loss = loss_fn(model(images), targets) / images.shape[0]
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss

  return step
