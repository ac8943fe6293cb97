"""The foveal command and the bench runner, end to end on the CPU."""
import json
import subprocess
import sys

import pytest

from tasks.bench import SUITES, main as bench_main


def test_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "tasks.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("fit", "validate", "test", "predict", "bench"):
        assert f"\n  {command} " in out


def test_bench_na1d_writes_a_complete_record(tmp_path, capsys, monkeypatch):
    from tasks.bench.suites import na1d

    monkeypatch.setattr(na1d, "CPU_CASES", [(1, 64, 2, 16, 7)])   # the interpreter is slow
    bench_main(["na1d", "--device", "cpu", "--out", str(tmp_path), "--rep-ms", "1"])
    files = list(tmp_path.glob("na1d-cpu-*.json"))
    assert len(files) == 1
    record = json.loads(files[0].read_text())
    env = record["environment"]
    assert {"device_name", "torch", "triton", "git_commit", "date", "command"} <= env.keys()
    assert env["host_us_start"] > 0 and env["host_us_end"] > 0   # the host's speed, before and after
    foveal = [r for r in record["results"] if r["impl"] == "foveal"]
    assert foveal and all(r["median_ms"] > 0 and r["tflops"] > 0 for r in foveal)
    assert any(r["impl"].startswith("sdpa") and r["median_ms"] > 0 for r in record["results"])
    printed = capsys.readouterr().out
    assert "foveal speedup" in printed and "host: trivial backward" in printed


def test_table_shows_the_hosts_issue_time():
    """CUDA rows carry ``cpu_ms`` (the host's time to issue a call): the table prints it and says
    what it means; CPU rows have none and print a blank."""
    from tasks.bench.runner import format_table

    env = {"device_name": "GPU", "torch": "t", "triton": "3", "date": "d", "host_us_start": 120.0, "host_us_end": 130.0}
    rows = [{"case": "c", "impl": "foveal", "median_ms": 0.5, "cpu_ms": 0.45},
            {"case": "c", "impl": "peer", "median_ms": 2.0, "cpu_ms": 0.3}]
    table = format_table({"environment": env, "results": rows})
    assert "CPU ms" in table.splitlines()[0] and "0.4500" in table and "0.3000" in table
    assert "bound by the host's CPU" in table
    cpu_table = format_table({"environment": env, "results": [dict(rows[0], cpu_ms=None)]})
    assert "0.4500" not in cpu_table and "bound by the host's CPU" not in cpu_table


def test_unknown_suite_is_rejected():
    with pytest.raises(SystemExit):
        bench_main(["no-such-suite"])
    assert "na1d" in SUITES


def test_unknown_model_is_rejected_before_anything_runs(capsys):
    with pytest.raises(SystemExit):
        bench_main(["models", "--model", "nosuch_net", "--no-json"])
    assert "--model 'nosuch_net' matches no registered model" in capsys.readouterr().err


def test_models_suite_times_inference_and_training(tmp_path):
    from tasks.bench import run_suite

    record = run_suite("models", "cpu", __import__("torch").float32, rep_ms=1, model=["resnet18"],
                       batch_size=2, img_size=32)
    modes = {(r["mode"], r["impl"]) for r in record["results"] if r["median_ms"]}
    assert modes == {("infer", "timm"), ("train", "timm")}
    assert all(r["items_per_s"] > 0 for r in record["results"])


def test_lka_suite_binds_each_case_to_its_own_weights(monkeypatch):
    """Two shapes with different channel counts: every implementation of every case runs."""
    import torch

    from tasks.bench import run_suite
    from tasks.bench.suites import lka

    monkeypatch.setattr(lka, "CPU_CASES", [(1, 8, 12), (1, 16, 9)])
    monkeypatch.setenv("FOVEAL_FORCE_REFERENCE", "1")   # the interpreter is not what is tested here
    record = run_suite("lka", "cpu", torch.float32, rep_ms=1)
    assert {r["shapes"]["x"][1] for r in record["results"]} == {8, 16}
    assert all(r["median_ms"] for r in record["results"]), [r.get("skipped") for r in record["results"]]


def test_gla_suite_times_both_directions_and_reports_missing_peers(monkeypatch):
    """Forward and forward+backward of foveal (bidirectional, causal) and the dense peer run on the
    CPU; fla, CUDA-only, is listed with the reason it did not run."""
    import torch

    from tasks.bench import run_suite
    from tasks.bench.suites import gla

    monkeypatch.setattr(gla, "CPU_CASES", [(1, 40, 2, 16)])
    monkeypatch.setenv("FOVEAL_FORCE_REFERENCE", "1")   # the interpreter is not what is tested here
    record = run_suite("gla", "cpu", torch.float32, rep_ms=1)
    rows = {(r["case"], r["impl"]): r for r in record["results"]}
    for case in ("gla fwd B1 T40 H2 D16", "gla fwd+bwd B1 T40 H2 D16"):
        for impl in ("foveal", "foveal causal", "sdpa-math (dense)"):
            assert rows[case, impl]["median_ms"] > 0 and rows[case, impl]["gbps"] > 0
        assert "CUDA" in rows[case, "fla causal"]["skipped"]


def test_diffusion_suite_times_a_dense_and_a_sparsified_step(monkeypatch):
    """A tiny Wan transformer, one step dense and one sparsified (window 3x3x3 of a 3x4x5 grid):
    both rows timed; the notes give the window's density and a finite PSNR against dense."""
    import torch

    pytest.importorskip("diffusers")
    from tasks.bench import run_suite

    monkeypatch.setenv("FOVEAL_FORCE_REFERENCE", "1")
    record = run_suite("diffusion", "cpu", torch.float32, rep_ms=1)
    rows = {r["impl"]: r for r in record["results"]}
    assert rows["foveal"]["median_ms"] > 0 and rows["dense (diffusers SDPA)"]["median_ms"] > 0
    assert rows["foveal"]["token_grid"] == [3, 4, 5] and rows["foveal"]["window_density"] == 0.45
    assert 0 < rows["foveal"]["psnr_sparse_vs_dense_db"] < float("inf")   # sparse differs from dense, finitely


def test_fraction_of_bound_is_dense_speedup_over_the_flop_bound():
    from tasks.bench.runner import Case, _add_fraction_of_bound

    case = Case("c", {}, {}, dense_impl="dense", flop_bound_x=10.0)
    rows = [{"case": "c", "impl": "dense", "median_ms": 5.0}, {"case": "c", "impl": "foveal", "median_ms": 1.0},
            {"case": "c", "impl": "broken", "median_ms": None}]
    _add_fraction_of_bound(case, rows)
    assert rows[1]["fraction_of_bound"] == 0.5 and rows[0]["fraction_of_bound"] == 0.1
    assert "fraction_of_bound" not in rows[2]


def test_models_suite_compiles_the_models():
    """--compile: the models run through torch.compile (aot_eager here: no codegen on the CPU) in
    place, for inference and the training step."""
    import torch

    from tasks.bench import run_suite

    from torch._dynamo.utils import counters

    counters.clear()
    record = run_suite("models", "cpu", torch.float32, rep_ms=1, warmup_ms=1, model=["test_resnet"], batch_size=2,
                       img_size=32, compile="default", compile_backend="aot_eager")
    assert counters["stats"]["unique_graphs"] >= 2   # dynamo traced the model (inference and training)
    rows = record["results"]
    assert {(r["mode"], r["impl"]) for r in rows if r["median_ms"]} == {("infer", "timm"), ("train", "timm")}
    assert all("compiled(default)" in r["case"] and r["compile"] == "default" for r in rows)


def test_models_suite_trains_a_segmentation_network_at_height_x_width(monkeypatch):
    """``--img-size HxW``: a non-square input, and a dense [B, K, H/8, W/8] output trains against
    per-pixel labels (BEVANet: a batch of two, as its train-mode BatchNorm on pooled 1x1 maps needs), kernels on and off."""
    import torch

    from tasks.bench import _img_size, run_suite

    assert _img_size("1024x2048") == (1024, 2048) and _img_size("224") == (224, 224)
    for bad in ("0x4", "4x", "ax4", "1x2x3"):
        with pytest.raises(Exception, match="HEIGHTxWIDTH"):
            _img_size(bad)
    monkeypatch.setenv("FOVEAL_FORCE_REFERENCE", "1")   # the interpreter is not what is tested here
    record = run_suite("models", "cpu", torch.float32, rep_ms=1, warmup_ms=1, model=["bevanet_s"], batch_size=2,
                       img_size=(64, 128))
    rows = record["results"]
    assert {(r["mode"], r["impl"]) for r in rows if r["median_ms"]} == {
        ("infer", "foveal"), ("infer", "plain (use_kernels=False)"),
        ("train", "foveal"), ("train", "plain (use_kernels=False)")}, [r.get("skipped") for r in rows]
    assert all("64x128px b2" in r["case"] and r["shapes"]["input"] == [2, 3, 64, 128] for r in rows)
    only = run_suite("models", "cpu", torch.float32, rep_ms=1, warmup_ms=1, model=["bevanet_s"], batch_size=1,
                     img_size=(64, 64), modes=["infer"])   # --modes infer: batch 1 (no train-mode BatchNorm)
    assert {r["mode"] for r in only["results"]} == {"infer"} and all(r["median_ms"] for r in only["results"])


def test_with_graphs_adds_a_graph_row_per_implementation_on_cuda_only():
    """Suites time each implementation eagerly and, on CUDA, replayed from a CUDA graph (captured
    lazily at its first call, so building the rows needs no GPU)."""
    from tasks.bench.suites.peers import CUDAGraphed, with_graphs

    impls = {"foveal": lambda: 1, "cudnn nchw": lambda: 2}
    assert with_graphs(impls, "cpu") == impls
    rows = with_graphs(impls, "cuda")
    assert list(rows) == ["foveal", "cudnn nchw", "foveal (CUDA graph)", "cudnn nchw (CUDA graph)"]
    assert isinstance(rows["foveal (CUDA graph)"], CUDAGraphed) and rows["foveal (CUDA graph)"].fn is impls["foveal"]
