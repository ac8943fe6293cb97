"""``apps.web``: the prediction functions on real sample images, checkpoints, and the served app."""
import numpy as np
import pytest
import timm
import torch
from PIL import Image

gr = pytest.importorskip("gradio")

from apps import web  # noqa: E402
from apps.common import CITYSCAPES_PALETTE, AppError, Predictor  # noqa: E402


def _samples() -> tuple[np.ndarray, np.ndarray]:
    try:
        from skimage import data

        return data.astronaut(), data.chelsea()          # 512x512, 300x451
    except ImportError:
        from sklearn.datasets import load_sample_image

        return load_sample_image("china.jpg"), load_sample_image("flower.jpg")[:300, :451]


@pytest.fixture(autouse=True)
def _reference_ops(monkeypatch):
    monkeypatch.setenv("FOVEAL_FORCE_REFERENCE", "1")   # the plain-PyTorch ops, not the Triton interpreter


@pytest.fixture(scope="module")
def images():
    return _samples()


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    return Predictor("van_b0", device="cpu", warn=False)


@pytest.fixture(scope="module")
def segmenter():
    torch.manual_seed(0)
    return Predictor("bevanet_s", device="cpu", seg_size=128, warn=False)


def imagenet_logits(model, image: np.ndarray) -> torch.Tensor:
    """The model's logits for an image preprocessed by hand with timm's eval transform."""
    from timm.data import create_transform, resolve_data_config

    x = create_transform(**resolve_data_config({}, model=model))(Image.fromarray(image))
    with torch.no_grad():
        return model.eval()(x[None])[0]


def test_build_app_returns_blocks(classifier, segmenter):
    app = web.build_app(classifier, segmenter)
    assert isinstance(app, gr.Blocks)
    with pytest.raises(AppError, match="segmentation model"):
        web.load_models(model="bevanet_s", device="cpu")


def test_classify_top5_imagenet(classifier, images):
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    for image in images:
        top = web.classify(image, classifier)
        assert len(top) == 5
        probs = list(top.values())
        assert all(0 <= p <= 1 for p in probs) and sum(probs) <= 1 + 1e-6
        assert probs == sorted(probs, reverse=True)
        expected = imagenet_logits(classifier.model, image).softmax(-1).topk(5)
        assert list(top) == [info.index_to_description(i) for i in expected.indices.tolist()]
        torch.testing.assert_close(torch.tensor(probs), expected.values, rtol=1e-4, atol=1e-6)


def test_segment_overlay(segmenter, images):
    for image in images:
        overlay = web.segment(image, segmenter)
        assert overlay.shape == image.shape and overlay.dtype == np.uint8
        assert np.abs(overlay.astype(int) - image).mean() > 5
        np.testing.assert_array_equal(web.segment(image, segmenter, alpha=0.0), image)
        colors = web.segment(image, segmenter, alpha=1.0).reshape(-1, 3)   # pure palette colours
        assert np.isin(colors.view([("", np.uint8)] * 3), CITYSCAPES_PALETTE.view([("", np.uint8)] * 3)).all()
    # the labels at the image's size are the model's logits, resized, argmax-ed
    image = images[1]
    labels = segmenter.segment([image])[0]
    assert labels.shape == image.shape[:2]
    small = torch.nn.functional.interpolate(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255,
                                            size=(85, 128), mode="bilinear", antialias=True)
    mean, std = torch.tensor(segmenter.data_config["mean"]), torch.tensor(segmenter.data_config["std"])
    with torch.no_grad():
        logits = segmenter.model.segment((small - mean[:, None, None]) / std[:, None, None])
    assert logits.shape[-2:] == (85, 128)
    logits = torch.nn.functional.interpolate(logits, size=image.shape[:2], mode="bilinear")
    assert (logits.argmax(1)[0].numpy() == labels).mean() > 0.999


def test_checkpoints_load(tmp_path, images, capsys):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    van = timm.create_model("van_b0").eval()
    torch.save(van.state_dict(), tmp_path / "van.pth")
    torch.manual_seed(2)
    bev = timm.create_model("bevanet_s").eval()
    save_file({k: v.contiguous() for k, v in bev.state_dict().items()}, tmp_path / "bev.safetensors")
    capsys.readouterr()

    args = web.parse_args(["--checkpoint", str(tmp_path / "van.pth"),
                           "--seg-checkpoint", str(tmp_path / "bev.safetensors"), "--seg-size", "128",
                           "--device", "cpu"])
    torch.manual_seed(3)   # a fresh random init would differ from the files
    classifier, segmenter = web.load_models(args.model, args.checkpoint, args.seg_model, args.seg_checkpoint,
                                            args.device, args.seg_size)
    assert "random weights" not in capsys.readouterr().err
    for name, tensor in van.state_dict().items():
        assert torch.equal(classifier.model.state_dict()[name], tensor), name
    for name, tensor in bev.state_dict().items():
        assert torch.equal(segmenter.model.state_dict()[name], tensor), name

    image = images[0]
    top = web.classify(image, classifier)
    expected = imagenet_logits(van, image).softmax(-1).topk(5)
    torch.testing.assert_close(torch.tensor(list(top.values())), expected.values, rtol=1e-4, atol=1e-6)
    random = Predictor("van_b0", device="cpu")
    assert "random weights" in capsys.readouterr().err
    assert not torch.allclose(random.classify([image]), classifier.classify([image]))

    seeded = Predictor("bevanet_s", device="cpu", seg_size=128, warn=False)
    assert (seeded.segment([image]) != segmenter.segment([image])).any()
    with pytest.raises(AppError, match="no such file"):
        Predictor("van_b0", checkpoint=tmp_path / "missing.pth")


def test_served_app_answers(classifier, segmenter, images, tmp_path, monkeypatch):
    """The Blocks wiring, end to end through a local server and gradio_client."""
    from gradio_client import Client, handle_file

    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    path = tmp_path / "chelsea.png"
    Image.fromarray(images[1]).save(path)
    app = web.build_app(classifier, segmenter)
    app.launch(prevent_thread_lock=True, quiet=True)
    try:
        client = Client(app.local_url, verbose=False)
        result = client.predict(handle_file(str(path)), api_name="/classify")
        assert [c["label"] for c in result["confidences"]] == list(web.classify(images[1], classifier))
        overlay = np.asarray(Image.open(client.predict(handle_file(str(path)), 0.5, api_name="/segment")).convert("RGB"))
        assert overlay.shape == images[1].shape
        assert np.abs(overlay.astype(int) - web.segment(images[1], segmenter)).mean() < 6   # up to webp compression
    finally:
        app.close()
