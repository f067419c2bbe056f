"""The distribution installs everything under `mambamixer` and no bare top-level names."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_holds_only_the_mambamixer_namespace(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps", str(ROOT),
                    "-w", str(tmp_path)], check=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("mambamixer-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"mambamixer", wheel.name.split("-py")[0] + ".dist-info"}, tops
    for module in ("kernels/__init__.py", "kernels/selective_scan/interface.py", "kernels/ssd/chunked.py",
                   "mixer/block.py", "tasks/__init__.py"):
        assert f"mambamixer/{module}" in names
    assert not any(name.startswith("mambamixer/tests/") for name in names)
    shipped_conf = {n for n in names if n.startswith("mambamixer/conf/")}
    assert shipped_conf == {f"mambamixer/{p.relative_to(ROOT).as_posix()}" for p in (ROOT / "conf").rglob("*.yaml")} | {
        "mambamixer/conf/__init__.py"}
    assert "mambamixer/data/ett/ETTh1.csv" in names


def test_public_api_imports():
    import mambamixer
    from mambamixer.kernels import mamba_chunk_scan_combined, selective_scan_fn  # noqa: F401
    from mambamixer.mixer import MambaMixer  # noqa: F401

    assert mambamixer.__version__


def test_ruff_is_clean():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_console_script_trains_from_any_directory(tmp_path):
    """The installed `mambamixer-train` finds its configs and the bundled data without the checkout's cwd."""
    script = Path(sys.executable).with_name("mambamixer-train")
    result = subprocess.run([str(script), "trainer.fast_dev_run=true", f"hydra.run.dir={tmp_path / 'run'}"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == str(tmp_path / "run")
