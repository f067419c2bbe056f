"""Image data: ImageFolder trees through timm's dataset and transforms, Mixup/CutMix, bundled digits, synthetic.

Layout of a folder dataset: root/train/<class>/<image> and root/val/<class>/<image>, ImageNet style.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import lightning as L
import torch
from PIL import Image, ImageOps
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, ImageDataset, Mixup, auto_augment, create_transform
from torch.utils.data import DataLoader, Dataset


def _posterize(img: Image.Image, bits_to_keep: int, **_) -> Image.Image:
    """RandAugment's posterize keeping 0 to 8 bits: Pillow >= 10 refuses 0 bits ("bits must be between 1 and
    8"), which timm's increasing posterize ("-inc1" in rand-m9-mstd0.5-inc1) asks for at high magnitudes;
    0 bits keeps no bit, the black image older Pillow returned."""
    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return ImageOps.posterize(img, bits_to_keep)


for _name in ("Posterize", "PosterizeIncreasing", "PosterizeOriginal"):
    auto_augment.NAME_TO_OP[_name] = _posterize

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


def cache_dir() -> Path:
    """$MAMBAMIXER_CACHE, else ~/.cache/mambamixer."""
    return Path(os.environ.get("MAMBAMIXER_CACHE") or Path.home() / ".cache" / "mambamixer")


def write_digits(root: Path) -> Path:
    """scikit-learn's digits (1,797 real 8x8 grey images of handwritten 0-9, UCI ML repository) as an ImageFolder
    tree root/{train,val}/<digit>/<index>.png, a stratified 80/20 split; written once, then reused."""
    if (root / "val").is_dir():
        return root
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    indices = list(range(len(digits.target)))
    train, val = train_test_split(indices, test_size=0.2, stratify=digits.target, random_state=0)
    tmp = root.with_name(root.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for split, chosen in (("train", train), ("val", val)):
        for i in chosen:
            folder = tmp / split / str(digits.target[i])
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (digits.images[i] * (255 / 16)).round().astype("uint8")  # values 0..16 -> 0..255
            Image.fromarray(pixels, mode="L").save(folder / f"{i:04d}.png")
    root.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(root)  # atomic: a concurrent writer's finished tree wins
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def class_folders(split_dir: Path) -> list[str]:
    """Sorted class folder names of one split, each checked to hold at least one image."""
    if not split_dir.is_dir():
        raise FileNotFoundError(f"root: expected an image folder at {split_dir} (root/train/<class>/*, "
                                "root/val/<class>/*)")
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"root: {split_dir} has no class folders")
    for name in classes:
        if not any(f.suffix.lower() in IMAGE_EXTENSIONS for f in (split_dir / name).rglob("*")):
            raise ValueError(f"root: class folder {split_dir / name} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return classes


class FolderImages(ImageDataset):
    """timm's ImageDataset over one split folder with a fixed class index; an image that cannot be decoded
    raises an error naming its path (timm's dataset would log it and silently serve the next image)."""

    def __init__(self, split_dir: Path, classes: list[str], transform=None):
        super().__init__(str(split_dir), reader="", class_map={c: i for i, c in enumerate(classes)},
                         transform=transform)

    def __getitem__(self, index: int):
        path, target = self.reader.samples[index]
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
        except (OSError, ValueError) as error:
            raise OSError(f"image {path}: cannot be read ({error})") from error
        return (self.transform(image) if self.transform else image), target


class SyntheticImages(Dataset):
    """`size` random normalised images (3, img_size, img_size) with random labels, fixed by `seed`: for
    throughput runs (no decoding, no augmentation)."""

    def __init__(self, size: int, num_classes: int, img_size: int, seed: int = 0):
        self.size, self.num_classes, self.img_size, self.seed = size, num_classes, img_size, seed

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        image = torch.randn(3, self.img_size, self.img_size, generator=g)
        return image, int(torch.randint(self.num_classes, (), generator=g))


class ImageDataModule(L.LightningDataModule):
    """Train/val loaders for image classification with the DeiT/timm augmentation recipe.

    dataset: "folder" (an ImageFolder tree at `root`), "digits" (scikit-learn's digits written under
        `root` or the cache directory) or "synthetic" (`synthetic_size` random images of `num_classes`).
    Training transform: timm's `create_transform` (random resized crop, flip, RandAugment `auto_augment`,
    random erasing `re_prob`); validation: resize to img_size / crop_pct and centre crop. Mixup/CutMix
    with label smoothing (timm's `Mixup`) is applied to training batches on the device; with both alphas 0
    labels stay class indices and the module applies label smoothing itself.
    `model_kwargs` gives the model its num_classes.
    """

    def __init__(self, dataset: str = "folder", root: str | None = None, img_size: int = 224, batch_size: int = 128,
                 num_workers: int = 8, crop_pct: float = 0.875, interpolation: str = "bicubic",
                 mean: tuple[float, ...] = IMAGENET_DEFAULT_MEAN, std: tuple[float, ...] = IMAGENET_DEFAULT_STD,
                 scale: tuple[float, float] = (0.08, 1.0), hflip: float = 0.5, color_jitter: float = 0.4,
                 auto_augment: str | None = "rand-m9-mstd0.5-inc1", re_prob: float = 0.25, re_mode: str = "pixel",
                 mixup: float = 0.8, cutmix: float = 1.0, mixup_prob: float = 1.0, mixup_switch_prob: float = 0.5,
                 label_smoothing: float = 0.1, num_classes: int | None = None, synthetic_size: int = 2560,
                 pin_memory: bool = True):
        super().__init__()
        if dataset not in ("folder", "digits", "synthetic"):
            raise ValueError(f"dataset: expected 'folder', 'digits' or 'synthetic', got {dataset!r}")
        if dataset == "folder" and not root:
            raise ValueError("root: dataset='folder' needs the folder holding train/ and val/")
        if dataset == "synthetic" and not num_classes:
            raise ValueError("num_classes: dataset='synthetic' needs a number of classes")
        if batch_size < 1 or ((mixup > 0 or cutmix > 0) and batch_size % 2):
            raise ValueError(f"batch_size: expected a positive (and, with Mixup/CutMix, even) size, got {batch_size}")
        self.dataset, self.img_size, self.batch_size, self.num_workers = dataset, img_size, batch_size, num_workers
        self.root = Path(root).expanduser() if root else (cache_dir() / "digits" if dataset == "digits" else None)
        self.label_smoothing, self.pin_memory, self.synthetic_size = label_smoothing, pin_memory, synthetic_size
        self.train_transform = create_transform(img_size, is_training=True, scale=scale, hflip=hflip,
                                                color_jitter=color_jitter, auto_augment=auto_augment,
                                                interpolation=interpolation, mean=mean, std=std, re_prob=re_prob,
                                                re_mode=re_mode)
        self.val_transform = create_transform(img_size, is_training=False, interpolation=interpolation, mean=mean,
                                              std=std, crop_pct=crop_pct)
        self.mixup_args = dict(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=mixup_prob, switch_prob=mixup_switch_prob,
                               label_smoothing=label_smoothing)
        self.classes = self._find_classes() if num_classes is None else [str(i) for i in range(num_classes)]
        self.mixup = Mixup(**self.mixup_args, num_classes=len(self.classes)) if mixup > 0 or cutmix > 0 else None

    def _find_classes(self) -> list[str]:
        if self.dataset == "digits":
            write_digits(self.root)
        train, val = class_folders(self.root / "train"), class_folders(self.root / "val")
        unknown = sorted(set(val) - set(train))
        if unknown:
            raise ValueError(f"root: {self.root / 'val'} has classes missing from train/: {unknown[:5]}")
        return train

    @property
    def model_kwargs(self) -> dict:
        return {"num_classes": len(self.classes)}

    def setup(self, stage: str | None = None) -> None:
        if self.dataset == "synthetic":
            n = len(self.classes)
            self.train_set = SyntheticImages(self.synthetic_size, n, self.img_size, seed=0)
            self.val_set = SyntheticImages(max(self.synthetic_size // 10, self.batch_size), n, self.img_size, seed=1)
        else:
            self.train_set = FolderImages(self.root / "train", self.classes, self.train_transform)
            self.val_set = FolderImages(self.root / "val", self.classes, self.val_transform)

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=train, drop_last=train,
                          num_workers=self.num_workers, pin_memory=self.pin_memory and torch.cuda.is_available(),
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Mixup/CutMix on training batches, on the device: class indices -> soft targets (batch, classes)."""
        if self.mixup is not None and self.trainer is not None and self.trainer.training:
            batch = self.mixup(*batch)
        return batch
