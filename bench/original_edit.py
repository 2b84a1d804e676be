"""A reference of the ORIGINAL repository's edit, for timing and token comparison only (not used by the pipeline).

The original (Lingkai-Kong/RE-Control, intervented_model/llama.py) edits the output of the final norm inside a copy of
LlamaModel.forward: on every forward pass, prefill included, it takes the whole [B, L, d] tensor (prompt, padding and
new token positions), makes it a leaf with requires_grad and runs `epochs` steps of torch.optim.SGD(lr) on
-value_model(x).sum() with autograd, in the model's dtype; the value model's own parameters keep requires_grad, so
every backward also computes (and accumulates) their gradients. Here the same computation sits in a forward hook on
utils.models.find_final_norm(model). Not reproduced: the original also ran lm_head on every position at prefill
(transformers now computes only the last position's logits), so this reference is, if anything, cheaper than it.
"""
import copy

import torch

from utils.intervention import FinalNormHook


class OriginalEdit(FinalNormHook):
    """Forward hook on the final norm doing the original all-positions autograd SGD edit; a context manager."""

    def __init__(self, model, value_model, lr, epochs):
        dtype = next(model.parameters()).dtype
        device = next(model.parameters()).device
        # the original cast its value model to the LLM's dtype (set_value_model: .to(torch.float16))
        self.value_model = copy.deepcopy(value_model).to(device=device, dtype=dtype)
        self.lr = lr
        self.epochs = epochs
        super().__init__(model)

    def _hook(self, _module, _inputs, output):
        x = output.detach().clone()
        x.requires_grad = True
        optimizer = torch.optim.SGD([x], lr=self.lr)
        with torch.enable_grad():  # generate runs under no_grad
            for _ in range(self.epochs):
                optimizer.zero_grad()
                loss = -self.value_model(x).sum()
                loss.backward()
                optimizer.step()
        return x.detach().clone()
