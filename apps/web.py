"""Gradio web app: classify an image (top-5 labels) or segment it (palette overlay).

    python -m apps.web [--model van_b0] [--checkpoint FILE] [--seg-model bevanet_s] \
        [--seg-checkpoint FILE] [--seg-size 1024] [--device cuda|cpu] [--port 7860]

``--model``/``--checkpoint`` drive the classification tab, ``--seg-model``/``--seg-checkpoint`` the
segmentation tab. Without a checkpoint a model has random weights (a warning says so). The
prediction logic is in plain functions (:func:`classify`, :func:`segment`); :func:`build_app`
returns the ``gr.Blocks`` without launching it; :func:`main` launches it.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from .common import CITYSCAPES_CLASSES, CLASSIFICATION, SEGMENTATION, AppError, Predictor

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def classify(image: np.ndarray, predictor: Predictor, k: int = 5) -> dict[str, float]:
    """``{label: probability}`` of the ``k`` most likely classes of one RGB image."""
    if image is None:
        return {}
    return predictor.topk(predictor.classify([image]), k=k)[0]


def segment(image: np.ndarray, predictor: Predictor, alpha: float = 0.5) -> np.ndarray:
    """The RGB image [H, W, 3] with the predicted class colours blended in at opacity ``alpha``."""
    if image is None:
        return None
    labels = predictor.segment([image])[0]
    return predictor.overlay(image, labels, alpha)


def load_models(model: str = "van_b0", checkpoint: str | None = None, seg_model: str = "bevanet_s",
                seg_checkpoint: str | None = None, device: str | None = None,
                seg_size: int | None = 1024) -> tuple[Predictor, Predictor]:
    """The classifier and the segmentation predictor, each checked to be of its kind."""
    classifier = Predictor(model, checkpoint, device=device)
    if classifier.kind != CLASSIFICATION:
        raise AppError(f"--model {model} is a segmentation model; pass it as --seg-model")
    segmenter = Predictor(seg_model, seg_checkpoint, device=device, seg_size=seg_size)
    if segmenter.kind != SEGMENTATION:
        raise AppError(f"--seg-model {seg_model} is a classifier; pass it as --model")
    return classifier, segmenter


def _legend(predictor: Predictor) -> str:
    if predictor.names != list(CITYSCAPES_CLASSES):
        return ""
    items = " ".join(f'<span style="background:rgb{tuple(int(c) for c in color)};color:'
                     f'{"#000" if sum(int(c) for c in color) > 380 else "#fff"};padding:1px 5px;'
                     f'border-radius:3px">{name}</span>' for name, color in zip(predictor.names, predictor.colors))
    return f"<div style='line-height:1.9'>{items}</div>"


def build_app(classifier: Predictor | None = None, segmenter: Predictor | None = None, **model_kwargs):
    """The demo as a ``gr.Blocks`` (not launched). Pass the two predictors, or
    :func:`load_models` keyword arguments (defaults: random ``van_b0`` and ``bevanet_s``)."""
    import gradio as gr

    if classifier is None or segmenter is None:
        loaded = load_models(**model_kwargs)
        classifier, segmenter = classifier or loaded[0], segmenter or loaded[1]

    def note(p: Predictor, checkpoint_flag: str) -> str:
        if p.random_weights:
            return (f"**{p.model_name} has random weights**: outputs are meaningless. "
                    f"`foveal weights list` lists the official checkpoints; pass one as `{checkpoint_flag}`.")
        return ""

    with gr.Blocks(title="foveal demo") as app:
        gr.Markdown("# foveal demo\nImage classification and semantic segmentation with the zoo's timm models.")
        with gr.Tab("Classification"):
            gr.Markdown(f"Model: `{classifier.model_name}` (top-5 of {len(classifier.names)} classes). "
                        + note(classifier, "--checkpoint"))
            with gr.Row():
                cls_in = gr.Image(type="numpy", image_mode="RGB", label="Image")
                cls_out = gr.Label(num_top_classes=5, label="Top-5")
            cls_btn = gr.Button("Classify", variant="primary")
            cls_btn.click(lambda im: classify(im, classifier), inputs=cls_in, outputs=cls_out,
                          api_name="classify")
        with gr.Tab("Segmentation"):
            gr.Markdown(f"Model: `{segmenter.model_name}` ({len(segmenter.names)} classes). "
                        + note(segmenter, "--seg-checkpoint"))
            with gr.Row():
                seg_in = gr.Image(type="numpy", image_mode="RGB", label="Image")
                seg_out = gr.Image(type="numpy", label="Overlay")
            alpha = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Overlay opacity")
            seg_btn = gr.Button("Segment", variant="primary")
            seg_btn.click(lambda im, a: segment(im, segmenter, a), inputs=[seg_in, alpha], outputs=seg_out,
                          api_name="segment")
            legend = _legend(segmenter)
            if legend:
                gr.HTML(legend)
    return app


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m apps.web", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="van_b0", help="classification model (default: %(default)s)")
    p.add_argument("--checkpoint", help="its local weights file; default: random weights")
    p.add_argument("--seg-model", default="bevanet_s", help="segmentation model (default: %(default)s)")
    p.add_argument("--seg-checkpoint", help="its local weights file; default: random weights")
    p.add_argument("--seg-size", type=int, default=1024,
                   help="longer side of the segmentation model's input; larger images are resized (default: %(default)s)")
    p.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda when available")
    p.add_argument("--host", default="127.0.0.1", help="server address (default: %(default)s)")
    p.add_argument("--port", type=int, default=7860, help="server port (default: %(default)s)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        models = load_models(args.model, args.checkpoint, args.seg_model, args.seg_checkpoint, args.device, args.seg_size)
    except AppError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    build_app(*models).launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
