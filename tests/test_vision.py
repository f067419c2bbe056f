"""Vision end to end: every ViM2 experiment through train.py, the data module's errors, a tiny overfit."""

import os
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_train import ROOT, metrics_of, run

from mambamixer.tasks.vision.data import ImageDataModule, write_digits
from mambamixer.tasks.vision.vim2 import ViM2

VISION = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("vim2_*.yaml"))


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The digits tree in a fresh cache directory, which train.py's subprocesses use too."""
    cache = tmp_path_factory.mktemp("cache")
    old = os.environ.get("MAMBAMIXER_CACHE")
    os.environ["MAMBAMIXER_CACHE"] = str(cache)
    yield write_digits(cache / "digits")
    if old is None:
        os.environ.pop("MAMBAMIXER_CACHE")
    else:
        os.environ["MAMBAMIXER_CACHE"] = old


def test_digits_tree_is_real_and_complete(digits):
    train = sorted(digits.glob("train/*/*.png"))
    val = sorted(digits.glob("val/*/*.png"))
    assert len(train) + len(val) == 1797 and len(val) == 360
    assert sorted(p.name for p in (digits / "train").iterdir()) == [str(d) for d in range(10)]


@pytest.mark.slow
@pytest.mark.parametrize("experiment", VISION)
def test_fast_dev_run_of_every_vision_experiment(experiment, digits, tmp_path):
    """The ImageNet recipes run on the digits folder at 32 px (bf16 autocast on CPU), the digits one as is.
    vim2_small's and vim2_base's recipes run with one block per stage: their full models are built and run by
    test_vim2's test of every registered size."""
    small = [] if experiment == "vim2_digits" else [f"data.root={digits}", "data.img_size=32", "data.batch_size=4"]
    if experiment in ("vim2_small_imagenet", "vim2_base_imagenet"):
        small.append("+model.depths=[1,1,1,1]")
    metrics, _ = metrics_of(run(f"experiment={experiment}", "trainer.fast_dev_run=true", "data.num_workers=0",
                                *small, f"hydra.run.dir={tmp_path}"))
    assert {"test/top1", "test/top5", "test/loss"} <= set(metrics) and metrics["test/loss"] > 0


@pytest.mark.slow
def test_synthetic_data_and_global_batch_in_log(tmp_path):
    result = run("experiment=vim2_digits", "data=synthetic", "data.img_size=32", "data.batch_size=8",
                 "data.num_classes=4", "data.synthetic_size=16", "data.num_workers=0", "trainer.max_epochs=1",
                 f"hydra.run.dir={tmp_path}")
    metrics, out_dir = metrics_of(result)
    assert metrics["epochs"] == 1
    assert "global batch 8 -> peak lr 0.00025" in (out_dir / "train.log").read_text() + result.stdout + result.stderr


@pytest.mark.slow
def test_resume_ends_at_the_uninterrupted_metrics(digits, tmp_path, monkeypatch):
    """A run that died after its first epoch, resumed from last.ckpt: the optimizer, the per-step cosine
    schedule, the EMA weights, Mixup/augmentation RNG and the sampler order continue, so every later metric
    equals the uninterrupted run's."""
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))  # train.py imports helpers.StopAfterEpochs
    common = ["experiment=vim2_digits", "data.num_workers=0", "data.batch_size=16", "trainer.limit_train_batches=3",
              "trainer.limit_val_batches=2", "trainer.limit_test_batches=2", "trainer.max_epochs=3",
              "task.warmup_epochs=1", "model.dims=[8,16,32,64]"]
    whole, whole_dir = metrics_of(run(*common, f"hydra.run.dir={tmp_path / 'whole'}"))
    run(*common, "+callbacks.stop._target_=helpers.StopAfterEpochs", "+callbacks.stop.epochs=1",
        f"hydra.run.dir={tmp_path / 'first'}")
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    resumed, resumed_dir = metrics_of(run(*common, f"ckpt_path={last}", f"hydra.run.dir={tmp_path / 'resumed'}"))
    assert resumed["epochs"] == whole["epochs"] == 3
    for key in ("test/loss", "test/top1"):
        assert resumed[key] == pytest.approx(whole[key], rel=1e-6), key
    whole_log = (whole_dir / "logs" / "metrics.csv").read_text().splitlines()
    resumed_log = (resumed_dir / "logs" / "metrics.csv").read_text().splitlines()
    assert resumed_log[1:] == [line for line in whole_log[1:] if not line.startswith("0,")]  # epochs 1, 2 and test


def make_folder(root: Path, digits: Path) -> Path:
    for split in ("train", "val"):
        for label in ("0", "1"):
            shutil.copytree(digits / split / label, root / split / label)
    return root


def test_folder_errors_name_the_path(digits, tmp_path):
    with pytest.raises(FileNotFoundError, match=f"expected an image folder at {tmp_path / 'none' / 'train'}"):
        ImageDataModule(root=str(tmp_path / "none"))
    root = make_folder(tmp_path / "data", digits)
    (root / "train" / "2").mkdir()
    with pytest.raises(ValueError, match=f"class folder {root / 'train' / '2'} holds no images"):
        ImageDataModule(root=str(root))
    shutil.rmtree(root / "train" / "2")
    shutil.copytree(digits / "val" / "3", root / "val" / "3")
    with pytest.raises(ValueError, match=r"has classes missing from train/: \['3'\]"):
        ImageDataModule(root=str(root))
    shutil.rmtree(root / "val" / "3")
    broken = next((root / "val" / "1").iterdir())
    broken.write_bytes(b"not a png")
    data = ImageDataModule(root=str(root), img_size=32, num_workers=0)
    data.setup()
    index = [p for p, _ in data.val_set.reader.samples].index(str(broken))
    with pytest.raises(OSError, match=f"image {broken}: cannot be read"):
        data.val_set[index]


def test_bad_arguments():
    with pytest.raises(ValueError, match="dataset: expected 'folder', 'digits' or 'synthetic'"):
        ImageDataModule(dataset="cifar")
    with pytest.raises(ValueError, match="root: dataset='folder' needs the folder"):
        ImageDataModule()
    with pytest.raises(ValueError, match="batch_size: expected a positive"):
        ImageDataModule(dataset="synthetic", num_classes=3, batch_size=5)


def test_tiny_model_overfits_eight_images():
    torch.manual_seed(0)
    model = ViM2(num_classes=2, dims=(16, 32), depths=(1, 1))
    x, y = torch.randn(8, 3, 32, 32), torch.tensor([0, 1] * 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(40):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05


def test_slurm_launcher_config_follows_the_trainer():
    """hydra/launcher=slurm (hydra's submitit plugin): one task and one GPU per device, one job per node."""
    from hydra import compose, initialize_config_dir

    overrides = ["experiment=vim2_tiny_imagenet", "data.root=/data/imagenet", "trainer=ddp", "trainer.devices=4",
                 "trainer.num_nodes=2", "hydra/launcher=slurm"]
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
