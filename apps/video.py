"""OpenCV video CLI: run a zoo model on every frame of a video and write the result as a video.

    python -m apps.video INPUT.mp4 --model bevanet_s [--checkpoint FILE] --out OUT.mp4 \
        [--max-frames N] [--device cuda|cpu] [--alpha 0.5] [--batch-size 4] [--size 1024]

A segmentation model (``bevanet*``) blends its class palette into each frame (``--alpha``);
a classifier (``van_*``, ``biformer_*``, ``vig_*``) writes its top-1 label and probability onto
each frame. Without ``--checkpoint`` the weights are random (a warning says so).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from .common import CLASSIFICATION, AppError, Predictor


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m apps.video", description=__doc__.split("\n\n")[0])
    p.add_argument("input", help="input video file (anything OpenCV reads: mp4, avi, ...)")
    p.add_argument("--model", default="bevanet_s", help="timm/zoo model name (default: %(default)s)")
    p.add_argument("--checkpoint", help="local weights file (`foveal weights convert` output); default: random weights")
    p.add_argument("--out", required=True, help="output video (.mp4: mp4v codec, .avi: MJPG)")
    p.add_argument("--max-frames", type=int, help="stop after this many frames")
    p.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda when available")
    p.add_argument("--alpha", type=float, default=0.5, help="segmentation overlay opacity in [0, 1] (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=4, help="frames per model call (default: %(default)s)")
    p.add_argument("--size", type=int,
                   help="segmentation: longer side of the model input (frames are resized, labels come back at "
                        "the frame's size); default: the frame's own size. Classifiers use their data config.")
    return p.parse_args(argv)


def read_frames(capture, max_frames: int | None) -> Iterator[np.ndarray]:
    """BGR frames from an open ``cv2.VideoCapture``, at most ``max_frames``."""
    count = 0
    while max_frames is None or count < max_frames:
        ok, frame = capture.read()
        if not ok:
            return
        count += 1
        yield frame


def open_video(path: str | Path):
    """An opened ``cv2.VideoCapture`` of ``path``; :class:`AppError` when it is missing or unreadable."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise AppError(f"{path}: no such file")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise AppError(f"{path}: OpenCV cannot open it as a video")
    return capture


def batched(frames: Iterator[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
    batch: list[np.ndarray] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def draw_label(frame_bgr: np.ndarray, text: str) -> np.ndarray:
    """``text`` in white on a dark banner across the top of the frame (a copy)."""
    import cv2

    out = frame_bgr.copy()
    width = out.shape[1]
    scale = max(0.4, width / 1280)
    thickness = max(1, round(2 * scale))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    pad = round(8 * scale)
    cv2.rectangle(out, (0, 0), (min(width, tw + 2 * pad), th + base + 2 * pad), (0, 0, 0), thickness=-1)
    cv2.putText(out, text, (pad, pad + th), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return out


def render(predictor: Predictor, batch_bgr: list[np.ndarray], alpha: float) -> list[np.ndarray]:
    """The output frames (BGR) of one batch of input frames (BGR)."""
    rgb = [f[..., ::-1] for f in batch_bgr]
    if predictor.kind == CLASSIFICATION:
        tops = predictor.topk(predictor.classify(rgb), k=1)
        return [draw_label(f, "{}: {:.1%}".format(*next(iter(top.items())))) for f, top in zip(batch_bgr, tops)]
    labels = predictor.segment(rgb)
    return [np.ascontiguousarray(predictor.overlay(im, lab, alpha)[..., ::-1]) for im, lab in zip(rgb, labels)]


def process_video(input_path: str | Path, predictor: Predictor, out_path: str | Path, *, max_frames: int | None = None,
                  alpha: float = 0.5, batch_size: int = 4) -> dict:
    """Read ``input_path``, render every frame with ``predictor``, write ``out_path``; returns
    ``{"frames", "seconds", "fps", "width", "height"}``."""
    import cv2
    from tqdm import tqdm

    input_path, out_path = Path(input_path), Path(out_path)
    if not 0.0 <= alpha <= 1.0:
        raise AppError(f"--alpha {alpha}: must lie in [0, 1]")
    if batch_size < 1 or (max_frames is not None and max_frames < 1):
        raise AppError("--batch-size and --max-frames must be positive")
    capture = open_video(input_path)
    writer = None
    try:
        fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
        if max_frames is not None:
            total = min(total, max_frames) if total else max_frames
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        done, start = 0, time.perf_counter()
        with tqdm(total=total, unit="frame", desc=f"{predictor.model_name} {input_path.name}", file=sys.stderr) as bar:
            for batch in batched(read_frames(capture, max_frames), batch_size):
                if writer is None:
                    height, width = batch[0].shape[:2]
                    out_path.parent.mkdir(parents=True, exist_ok=True)
                    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if out_path.suffix.lower() == ".avi" else "mp4v"))
                    writer = cv2.VideoWriter(str(out_path), fourcc, fps, (width, height))
                    if not writer.isOpened():
                        raise AppError(f"--out {out_path}: OpenCV cannot write this video (try a .mp4 or .avi name)")
                for frame in render(predictor, batch, alpha):
                    writer.write(frame)
                done += len(batch)
                bar.update(len(batch))
        seconds = time.perf_counter() - start
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    if done == 0:
        raise AppError(f"{input_path}: OpenCV read no frames from it (not a video, or an unsupported codec)")
    return dict(frames=done, seconds=seconds, fps=done / max(seconds, 1e-9), width=width, height=height)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        open_video(args.input).release()   # a bad input fails before the model is built
        predictor = Predictor(args.model, args.checkpoint, device=args.device, seg_size=args.size)
        stats = process_video(args.input, predictor, args.out, max_frames=args.max_frames, alpha=args.alpha,
                              batch_size=args.batch_size)
    except AppError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"{stats['frames']} frames ({stats['width']}x{stats['height']}) in {stats['seconds']:.2f} s: "
          f"{stats['fps']:.2f} frames/s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
