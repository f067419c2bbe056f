"""The distribution installs everything under `mambamixer` and no bare top-level names."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: The package folders of the repository root; the wheel must hold every package below them.
PACKAGE_FOLDERS = {"kernels", "mixer", "tasks", "utils", "conf"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # From a copy of the source files: an in-tree build/ folder would keep files deleted since.
    src = out / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".*", "build", "outputs", "multirun", "*.egg-info",
                                                             "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps", str(src),
                    "-w", str(out)], check=True, cwd=out)
    (built,) = out.glob("mambamixer-*.whl")
    return built


@pytest.mark.slow
def test_wheel_holds_only_the_mambamixer_namespace(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"mambamixer", wheel.name.split("-py")[0] + ".dist-info"}, tops
    packages = {f"mambamixer/{p.relative_to(ROOT).as_posix()}" for p in ROOT.rglob("__init__.py")
                if p.parts[len(ROOT.parts)] in {"__init__.py", *PACKAGE_FOLDERS}}
    assert packages <= set(names), packages - set(names)
    assert not any(name.startswith(("mambamixer/tests/", "mambamixer/bench/")) for name in names)
    assert "mambamixer/train.py" in names and "mambamixer/setup.py" not in names
    shipped_conf = {n for n in names if n.startswith("mambamixer/conf/")}
    assert shipped_conf == {f"mambamixer/{p.relative_to(ROOT).as_posix()}" for p in (ROOT / "conf").rglob("*.yaml")} | {
        "mambamixer/conf/__init__.py"}
    assert {f"mambamixer/data/ett/{f}" for f in ("ETTh1.csv", "LICENSE", "README.md")} <= set(names)


@pytest.mark.slow
def test_wheel_installs_and_imports_every_module(wheel, tmp_path):
    """The wheel alone (no checkout, no editable install) in a fresh virtual environment that sees this
    environment's packages: every module imports and the console script answers."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # This environment's packages, appended after the new one's (their .pth files, and so the editable
    # install of the checkout, are not processed).
    (Path(site) / "outer.pth").write_text("\n".join(p for p in sys.path if p.endswith("-packages")) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", site,
                    str(wheel)], check=True)
    imports = ("import importlib, pkgutil, mambamixer\n"
               f"assert mambamixer.__file__.startswith({site!r}), mambamixer.__file__\n"
               "names = [m.name for m in pkgutil.walk_packages(mambamixer.__path__, 'mambamixer.')]\n"
               "for name in names: importlib.import_module(name)\n"
               "print(len(names))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([str(python), "-c", imports], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert int(result.stdout) >= 30
    script = Path(site) / "bin" / "mambamixer-train"
    result = subprocess.run([str(python), str(script), "--help"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "experiment: " in result.stdout and "tsm2_etth1" in result.stdout


def test_public_api_imports():
    import mambamixer
    from mambamixer.kernels import mamba_chunk_scan_combined, selective_scan_fn  # noqa: F401
    from mambamixer.mixer import MambaMixer  # noqa: F401

    assert mambamixer.__version__


def test_ruff_is_clean():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_console_script_trains_from_any_directory(tmp_path):
    """The installed `mambamixer-train` finds its configs and the bundled data without the checkout's cwd."""
    script = Path(sys.executable).with_name("mambamixer-train")
    result = subprocess.run([str(script), "trainer.fast_dev_run=true", f"hydra.run.dir={tmp_path / 'run'}"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == str(tmp_path / "run")
