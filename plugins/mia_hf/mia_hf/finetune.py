"""Fine-tuning a Hugging Face causal LM for ``mia calibrate`` (registered as each model's ``finetune``).

Full fine-tuning (AdamW on every weight) for small models; LoRA through ``peft`` on request or
above ``config.full_max_params`` parameters, merged into the weights before saving, so the
result is always an ordinary model folder that every mia command loads with ``--model FOLDER``.
The model is loaded exactly as the backend loads it (GGUF names from their dequantized float32
copy), and trained on what the backend scores: BOS (when the model uses one) + the first
``max_tokens`` tokens of each text.
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mia_core.calibrate.training import FinetuneConfig, require_free_space
from mia_core.errors import MiaError
from mia_core.progress import progress

DEFAULT_LR = {"full": 2e-4, "lora": 1e-3}


def choose_method(config: FinetuneConfig, n_params: int) -> str:
    if config.method != "auto":
        return config.method
    return "full" if n_params <= config.full_max_params else "lora"


def _encode(backend: Any, texts: Sequence[str], max_tokens: int) -> list[list[int]]:
    encoded = backend.tokenizer.encode_batch(list(texts))
    return [backend._with_bos(ids[:max_tokens]) for ids in encoded if ids]


def _batch(rows: list[list[int]], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    labels = ids.masked_fill(mask == 0, -100)  # padding is not predicted
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def _wrap_lora(model: Any, rank: int) -> Any:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:
        raise MiaError("LoRA fine-tuning needs the package peft: pip install peft") from exc
    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules="all-linear",
                        task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def _adamw(params: list[Any], lr: float) -> torch.optim.Optimizer:
    """AdamW, fused where this torch has it for the device (on a CPU the optimizer step of a
    135M-parameter model takes as long as the forward pass otherwise)."""
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.0)


def _serializable(model: Any) -> Any:
    """The model as a plain (unquantized) one that save_pretrained accepts. The dequantized copy of
    a GGUF model keeps ``quantization_config`` (gguf) in its config, and transformers refuses to
    save such a model: rebuild it from the config without it, with the trained weights."""
    if getattr(model.config, "quantization_config", None) is None:
        return model
    import copy

    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(model.config)
    del config.quantization_config
    dtype = next(model.parameters()).dtype
    plain = AutoModelForCausalLM.from_config(config, dtype=dtype)
    plain.load_state_dict(model.state_dict())
    return plain.eval()


def _save_tokenizer(tokenizer: Any, folder: Path) -> None:
    hf = getattr(tokenizer, "hf", None)
    if hf is not None:
        hf.save_pretrained(str(folder))
        return
    model_file = getattr(tokenizer, "model_file", None)  # SentencePiece models keep their .model file
    if model_file:
        shutil.copyfile(model_file, folder / "tokenizer.model")
        return
    raise MiaError(f"cannot save the tokenizer {getattr(tokenizer, 'name', '?')!r} with the fine-tuned model")


def finetune(name: str, options: dict[str, Any], texts: Sequence[str], folder: Path,
             config: FinetuneConfig) -> dict[str, Any]:
    """Train a copy of model ``name`` on ``texts`` and save it into ``folder`` (see the module doc)."""
    from mia_hf.loading import _quiet_loading, make_backend

    backend = make_backend(name, options)  # typed by the core (calibrate.training.finetune_into)
    model = backend.model
    n_params = int(sum(p.numel() for p in model.parameters()))
    method = choose_method(config, n_params)
    if method not in ("full", "lora"):
        raise MiaError(f"unknown fine-tuning method {method!r}: use auto, full or lora")
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    require_free_space(folder, int(weight_bytes * 1.1) + 50_000_000)
    rows = _encode(backend, texts, config.max_tokens)
    if not rows:
        raise MiaError("nothing to fine-tune on: every training text is empty")
    lr = config.learning_rate if config.learning_rate else DEFAULT_LR[method]
    torch.manual_seed(config.seed)
    if method == "lora":
        model = _wrap_lora(model, config.lora_rank)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = _adamw(trainable, lr)
    order_rng = random.Random(config.seed)
    steps_per_epoch = (len(rows) + config.batch_size - 1) // config.batch_size
    epoch_losses: list[float] = []
    started = time.perf_counter()
    with progress(total=steps_per_epoch * config.epochs, desc="fine-tuning", unit="step",
                  quiet=config.quiet) as bar:
        for epoch in range(config.epochs):
            order = list(range(len(rows)))
            order_rng.shuffle(order)
            total, count = 0.0, 0
            for start in range(0, len(order), config.batch_size):
                batch = _batch([rows[i] for i in order[start:start + config.batch_size]], backend.pad_id,
                               backend.device)
                loss = model(**batch).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                total += float(loss.detach())
                count += 1
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{float(loss.detach()):.3f}")
            epoch_losses.append(total / count)
    seconds = time.perf_counter() - started
    if method == "lora":
        model = model.merge_and_unload()
    model = _serializable(model.eval())
    with _quiet_loading():  # no "Writing model shards" bar: the fine-tuning bar was the long part
        model.save_pretrained(str(folder))
    _save_tokenizer(backend.tokenizer, folder)
    return {
        "method": method, "learning_rate": lr, "parameters": n_params,
        "trainable_parameters": int(sum(p.numel() for p in trainable)), "texts": len(rows),
        "tokens_per_epoch": int(sum(len(r) for r in rows)), "steps": steps_per_epoch * config.epochs,
        "epoch_losses": epoch_losses, "seconds": seconds, "device": str(backend.device),
        "dtype": str(backend.dtype).removeprefix("torch."), "base_source": backend.source,
    }
