"""``foveal bench models --model NAME ...``: backbone throughput, foveal kernels vs the plain path.

For each model: images/s for inference and for one training step (forward, backward, SGD
update; cross-entropy against random labels, per pixel for segmentation networks such as
BEVANet) with bf16 autocast and channels-last on CUDA (fp32 on CPU), ``use_kernels=True``
("foveal") against ``use_kernels=False`` (the plain-PyTorch path). timm models without a
``use_kernels`` switch (convnext_tiny, swin_tiny_patch4_window7_224, ...) run as peers. The
runner adds each call's peak memory on CUDA. ``--compile MODE`` runs every model through
``torch.compile`` (``nn.Module.compile``; MODE ``default``, ``reduce-overhead`` or
``max-autotune``): small backbones whose eager step is bound by the host's launch cost
(VAN-b0 at batch 128) show their GPU work this way.
"""
from __future__ import annotations


import timm
import torch

import zoo  # noqa: F401  (registers the zoo models)

from ..runner import Case, register_suite

DEFAULT_MODELS = ["van_b0"]


def _expand(patterns: list[str]) -> list[str]:
    names = []
    for pattern in patterns:
        matches = timm.list_models(pattern) if any(c in pattern for c in "*?[") else \
            [pattern] if timm.is_model(pattern) else []
        if not matches:
            raise ValueError(f"--model {pattern!r} matches no registered model")
        names += [m for m in matches if m not in names]
    return names


def _build(name: str, device: str, use_kernels: bool | None, compile_mode: str | None = None,
           compile_backend: str = "inductor") -> torch.nn.Module:
    kwargs = {} if use_kernels is None else {"use_kernels": use_kernels}
    model = timm.create_model(name, pretrained=False, **kwargs).to(device)
    model = model.to(memory_format=torch.channels_last)
    if compile_mode is not None:   # in place: the module (and its state dict) stays the same object
        model.compile(mode=compile_mode, backend=compile_backend)
    return model


def _infer(model, x, autocast_dtype):
    model.eval()

    def run():
        with torch.inference_mode(), torch.autocast(x.device.type, dtype=autocast_dtype,
                                                    enabled=autocast_dtype is not None):
            return model(x)
    return run


def _train_step(model, x, autocast_dtype):
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    targets = {}

    def target_for(out: torch.Tensor) -> torch.Tensor:
        """Random labels for [B, K] logits or per pixel for dense [B, K, H, W] ones (made once)."""
        shape = (out.shape[0], *out.shape[2:])
        if shape not in targets:
            gen = torch.Generator(device=x.device).manual_seed(1)
            targets[shape] = torch.randint(0, out.shape[1], shape, device=x.device, generator=gen)
        return targets[shape]

    def run():
        with torch.autocast(x.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            out = model(x)
            loss = loss_fn(out, target_for(out))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()
    return run


def _supports_kernels(name: str) -> bool:
    """Zoo models take ``use_kernels``; other timm models run as peers."""
    return timm.models.model_entrypoint(name).__module__.startswith("zoo.")


@register_suite("models")
def models_suite(device: str, dtype: torch.dtype, model: list[str] | None = None,
                 batch_size: int | None = None, img_size: int | tuple[int, int] | None = None,
                 compile: str | None = None, compile_backend: str = "inductor",
                 modes: list[str] | None = None, **options) -> list[Case]:
    names = _expand(model or DEFAULT_MODELS)
    batch = batch_size or (128 if device == "cuda" else 4)
    if img_size is None:
        img_size = 224 if device == "cuda" else 64
    height, width = (img_size, img_size) if isinstance(img_size, int) else img_size
    size = f"{height}px" if height == width else f"{height}x{width}px"
    autocast_dtype = dtype if device == "cuda" and dtype != torch.float32 else None
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch, 3, height, width, device=device, generator=gen).to(memory_format=torch.channels_last)
    cases = []
    for name in names:
        variants = {"foveal": True, "plain (use_kernels=False)": False} if _supports_kernels(name) else {"timm": None}
        for mode in modes or ("infer", "train"):
            impls = {}
            for label, flag in variants.items():
                net = _build(name, device, flag, compile, compile_backend)
                impls[label] = (_infer(net, x, autocast_dtype) if mode == "infer"
                                else _train_step(net, x, autocast_dtype))
            compiled = "" if compile is None else f" compiled({compile})"
            cases.append(Case(name=f"{name} {mode} {size} b{batch}{compiled}", impls=impls, items=batch,
                              shapes={"input": [batch, 3, height, width]},
                              notes={"model": name, "mode": mode, "compile": compile}))
    return cases
