"""The GPU benchmark-and-training command (scripts/gpu_bench_and_train.sh,
scripts/sandbox_train_gpu.py): what can go wrong without a GPU does not. The run's params are
ordinary `bas sandbox train` params, and the packed model comes back byte for byte."""

from __future__ import annotations

import argparse
import importlib.util
import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from bas import config

REPO = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("sandbox_train_gpu", REPO / "scripts" / "sandbox_train_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _args(**values) -> argparse.Namespace:
    defaults = dict(out=Path("/tmp/w"), batch_size=128, lr=5e-4, warmup_steps=200, validity_samples=200, vae_steps=None)
    return argparse.Namespace(**{**defaults, **values})


def test_the_sized_run_is_an_ordinary_sandbox_config():
    script = _script()
    cfg = config.load(REPO / "params.yaml", script.overrides(_args(), steps=5000))
    assert cfg.sandbox.base.steps == 5000 and cfg.sandbox.base.batch_size == 128
    assert cfg.sandbox.base.warmup_steps == 200 and cfg.sandbox.base_restart is None
    assert cfg.models.sandbox_weights == "/tmp/w"
    # A run shorter than its warm-up warms up over all of it rather than failing validation.
    short = config.load(REPO / "params.yaml", script.overrides(_args(vae_steps=30), steps=50))
    assert short.sandbox.base.warmup_steps == 50 and short.sandbox.vae.steps == 30


def test_packed_parts_reassemble_to_the_same_files(tmp_path, monkeypatch):
    script = _script()
    monkeypatch.setattr(script, "PART_BYTES", 4096)
    model = tmp_path / "diffusion"
    (model / "unet").mkdir(parents=True)
    payload = bytes(range(256)) * 40                                  # 10 KiB: three parts
    (model / "unet" / "weights.bin").write_bytes(payload)
    (model / "training_record.json").write_text('{"steps": 1}')
    parts = script.pack(model, tmp_path / "out")
    assert [p.name for p in parts] == [f"diffusion.tar.part-{k:02d}" for k in range(len(parts))]
    assert len(parts) >= 3 and all(p.stat().st_size <= 4096 for p in parts)
    joined = b"".join(p.read_bytes() for p in parts)
    with tarfile.open(fileobj=io.BytesIO(joined)) as tar:
        assert tar.extractfile("diffusion/unet/weights.bin").read() == payload
        assert tar.extractfile("diffusion/training_record.json").read() == b'{"steps": 1}'


def test_the_bench_and_train_script_parses_and_refuses_bad_options_before_any_work(tmp_path):
    script = str(REPO / "scripts" / "gpu_bench_and_train.sh")
    assert subprocess.run(["bash", "-n", script]).returncode == 0
    shown = subprocess.run(["bash", script, "--help"], capture_output=True, text=True)
    assert shown.returncode == 0 and "--budget-s" in shown.stdout
    out = tmp_path / "out"
    for bad, said in ((["--budget-s", "ten"], "--budget-s 'ten'"), (["--bench-s"], "--bench-s needs a value"),
                      (["--minutes", "5"], "unknown argument '--minutes'")):
        run = subprocess.run(["bash", script, "--out", str(out), *bad], capture_output=True, text=True)
        assert run.returncode == 2 and said in run.stderr
    assert not out.exists()


@pytest.mark.parametrize("bad", [["--budget-s", "10"], ["--out", "/tmp/x"]])
def test_the_sized_run_names_what_it_misses(bad, capsys):
    with pytest.raises(SystemExit) as exc:
        _script().main(bad)
    assert exc.value.code == 2
    assert "required" in capsys.readouterr().err


def test_sandbox_train_on_a_device_it_cannot_use_is_one_error_before_any_work(tmp_path, capsys):
    from bas.cli import main

    weights = tmp_path / "weights"
    code = main(["--params", str(REPO / "params.yaml"), "-S", f"models.sandbox_weights={weights}",
                 "sandbox", "train", "--only", "vae,base", "--device", "tpu", "--work-dir", str(tmp_path / "work")])
    assert code == 2
    assert capsys.readouterr().err.strip() == "bas: error: --device 'tpu': not a torch device (auto, cpu, cuda, cuda:N)"
    code = main(["--params", str(REPO / "params.yaml"), "sandbox", "train", "--workers", "-2",
                 "--device", "cpu", "--work-dir", str(tmp_path / "work")])
    assert code == 2 and "--workers -2" in capsys.readouterr().err
    assert not weights.exists() and not (tmp_path / "work").exists()
