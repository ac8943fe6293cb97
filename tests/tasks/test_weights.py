"""foveal weights: convert official-layout checkpoints to safetensors safely, verify hashes."""
import hashlib
import json

import pytest
import timm
import torch

import zoo  # noqa: F401
from tasks.cli import main
from tasks.weights import convert, load_checkpoint, load_manifest, verify

MODEL = "van_b0"   # a zoo model whose official checkpoint keys equal the module's (VAN releases)


def _official_checkpoint(path, seed):
    """{'state_dict': sd} as VAN releases it, with DDP 'module.' prefixes, random weights."""
    gen = torch.Generator().manual_seed(seed)
    model = timm.create_model(MODEL, pretrained=False)
    sd = {f"module.{k}": (torch.randn(v.shape, generator=gen) if v.is_floating_point() else v)
          for k, v in model.state_dict().items()}
    torch.save({"state_dict": sd, "epoch": 300}, path)
    return {k[len("module."):]: v for k, v in sd.items()}


def test_convert_round_trips_to_timm_pretrained_load(tmp_path):
    seed = int(torch.seed() % 2**31)
    src, dst = tmp_path / "van_tiny_754.pth.tar", tmp_path / "out" / f"{MODEL}.safetensors"
    expected = _official_checkpoint(src, seed)
    convert(src, MODEL, dst)
    meta = json.loads(dst.with_suffix(".json").read_text())
    assert meta["architecture"] == MODEL and meta["num_classes"] == 1000 and len(meta["sha256"]) == 64
    model = timm.create_model(MODEL, pretrained=True, pretrained_cfg_overlay=dict(file=str(dst)))
    loaded = model.state_dict()
    for k, v in expected.items():
        assert torch.equal(loaded[k], v), f"{k} differs after convert + timm load (seed {seed})"
    # a different head width is re-headed by timm, the backbone stays
    model10 = timm.create_model(MODEL, pretrained=True, num_classes=10, pretrained_cfg_overlay=dict(file=str(dst)))
    assert model10.get_classifier().out_features == 10


class _RunsCode:
    """Unpickling this would create a file: the shape of a malicious checkpoint."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


class _Args:
    """A harmless custom object (like a trainer's saved args) that weights_only refuses too."""

    def __init__(self):
        self.lr = 1e-3


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker, src = tmp_path / "pwned", tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _RunsCode(marker)}, src)
    with pytest.raises(ValueError, match="--trusted"):
        convert(src, MODEL, tmp_path / "x.safetensors")
    assert not marker.exists(), "weights_only loading executed code from the pickle"
    with pytest.raises(ValueError, match="--trusted"):
        load_checkpoint(src)


def test_trusted_flag_allows_custom_objects(tmp_path):
    src = tmp_path / "with_args.pth"
    sd = _official_checkpoint(tmp_path / "tmp.pth", 0)
    torch.save({"state_dict": sd, "args": _Args()}, src)
    with pytest.raises(ValueError):
        load_checkpoint(src)
    assert isinstance(load_checkpoint(src, trusted=True)["args"], _Args)
    convert(src, MODEL, tmp_path / "ok.safetensors", trusted=True)


def test_verify_detects_a_changed_byte(tmp_path):
    src, dst = tmp_path / "v.pth", tmp_path / "v.safetensors"
    _official_checkpoint(src, 1)
    convert(src, MODEL, dst)
    ok, actual, source = verify(dst)
    assert ok is True and source.endswith(".json")
    data = bytearray(dst.read_bytes())
    data[len(data) // 2] ^= 0x01
    dst.write_bytes(bytes(data))
    ok, changed, _ = verify(dst)
    assert ok is False and changed != actual
    assert verify(dst, expected=changed)[0] is True


def test_cli_list_and_verify_mismatch_exit_code(tmp_path, capsys):
    main(["weights", "list"])
    out = capsys.readouterr().out
    for entry in load_manifest():
        assert entry["model"] in out
        assert {"model", "url", "file", "sha256", "license", "converter", "metric"} <= entry.keys()
    f = tmp_path / "blob.bin"
    f.write_bytes(b"abc")
    with pytest.raises(SystemExit, match="MISMATCH"):
        main(["weights", "verify", str(f), "--sha256", "0" * 64])
    main(["weights", "verify", str(f), "--sha256", hashlib.sha256(b"abc").hexdigest()])
    assert "OK" in capsys.readouterr().out


def test_cli_missing_file_is_a_clean_error(tmp_path):
    """A wrong path ends the command with one line naming it, not a traceback."""
    missing = str(tmp_path / "nope.pth")
    with pytest.raises(SystemExit, match="foveal weights convert: .*nope.pth"):
        main(["weights", "convert", missing, "--model", "van_b0", "--out", str(tmp_path / "x.safetensors")])
    with pytest.raises(SystemExit, match="foveal weights verify: .*nope.pth"):
        main(["weights", "verify", missing])


def test_convert_a_bevanet_finetuned_release(tmp_path):
    """A released BEVANet file (``model.``-prefixed FullModel keys plus the loss's class weights) for
    the CamVid head (11 classes) converts and loads back through timm."""
    model = timm.create_model("bevanet_s.camvid", use_kernels=False)
    sd = {f"model.{k}": v for k, v in model.state_dict().items()}
    sd["sem_loss.criterion.weight"] = torch.ones(11)
    src = tmp_path / "BEVANet_S_VAL_Camvid.pt"
    torch.save(sd, src)
    out = convert(src, "bevanet_s.camvid", tmp_path / "bevanet_s_camvid.safetensors")
    assert json.loads(out.with_suffix(".json").read_text())["num_classes"] == 11
    back = timm.create_model("bevanet_s.camvid", pretrained=True, pretrained_cfg_overlay=dict(file=str(out)))
    for k, v in model.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
