"""Lookahead weight averaging: a slow copy of the weights that the fast ones are pulled back to.

Every `every` steps the average moves towards the current weights by (1 - decay) and the
model is reset to the average; decay grows over the run (as the cube of progress), and at
the end the model takes the average. It is a hook: fit tells it of every optimizer step and
of the end of training. This is airbench94's scheme (Jordan, arXiv 2404.00498)
and lookahead's (Zhang et al., arXiv 1907.08610).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class Lookahead:
    """A hook that keeps a slow average of the weights and pulls the model back to it."""

    def __init__(self, model: nn.Module, progress: Callable[[int], float], every: int = 5,
                 max_decay: float = 0.95 ** 5):
        """progress(step) -> share of the run done (a RunProgress), which sets the decay."""
        self.model, self.progress, self.every, self.max_decay = model, progress, every, max_decay
        self.average = {k: v.detach().clone() for k, v in model.state_dict().items()
                        if v.is_floating_point()}
        self.step = 0

    @torch.no_grad()
    def update(self, decay: float) -> None:
        current = self.model.state_dict()
        average = list(self.average.values())
        values = [current[name] for name in self.average]
        # One fused kernel per list instead of two launches per tensor (it matters on a GPU).
        torch._foreach_lerp_(average, values, 1 - decay)
        torch._foreach_copy_(values, average)

    def on_optimizer_step(self) -> None:
        self.step += 1
        if self.step % self.every == 0:
            self.update(self.max_decay * self.progress(self.step) ** 3)

    def on_train_end(self) -> None:
        """Put the averaged weights into the model (once, after the last step)."""
        self.update(1.0)

    def state_dict(self) -> dict:
        return {"average": self.average, "step": self.step}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        """Copy a saved average into this one's tensors (which live on the model's device)."""
        for name, value in state["average"].items():
            self.average[name].copy_(value)
        self.step = state["step"]
