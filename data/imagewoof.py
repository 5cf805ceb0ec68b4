"""ImageWoof (10 dog breeds, fast.ai) as an ``ImageFolder`` tree under ``data.root``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from data.bundle import DataBundle
from data.common import label_to_tensor, shuffled_view
from data.errors import missing_files_error
from data.torchvision_compat import import_torchvision

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
FOLDERS = ("imagewoof2", "imagewoof2-320", "imagewoof2-160")
URL = "https://s3.amazonaws.com/fast-ai-imageclas/{folder}.tgz"
NUM_CLASSES = 10
RESIZE_RATIO = 1.14  # resize the short side to ~size / 0.875 before the centre crop

_TORCHVISION = import_torchvision()


def imagewoof_dirs(root: Path, folder: str = "imagewoof2") -> tuple[Path, Path]:
    """The train and val folders of the ImageFolder tree."""
    base = Path(root) / folder
    return base / "train", base / "val"


def _class_dirs(split_dir: Path) -> list[Path]:
    if not split_dir.is_dir():
        return []
    return sorted(path for path in split_dir.iterdir() if path.is_dir())


def _transforms(image_size: int, channels: int, augment: bool) -> tuple[Any, Any]:
    transforms = _TORCHVISION.transforms
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    colour: list[Any] = []
    if channels == 1:
        colour = [transforms.Grayscale(num_output_channels=1)]
        mean, std = (sum(mean) / 3,), (sum(std) / 3,)  # approximate grey statistics
    tail = [transforms.ToTensor(), transforms.Normalize(mean, std)]
    evaluation = [
        transforms.Resize(round(image_size * RESIZE_RATIO)),
        transforms.CenterCrop(image_size),
    ]
    training = (
        [transforms.RandomResizedCrop(image_size), transforms.RandomHorizontalFlip()]
        if augment
        else evaluation
    )
    return (
        transforms.Compose(colour + training + tail),
        transforms.Compose(colour + evaluation + tail),
    )


def _download(root: Path, folder: str) -> None:
    try:
        _TORCHVISION.datasets.utils.download_and_extract_archive(
            URL.format(folder=folder), download_root=str(root)
        )
    except Exception as error:  # network errors come in many types
        print(f"data.download=true: downloading {folder} failed: {error}")


def load_imagewoof(
    root: Path,
    image_size: int,
    channels: int,
    download: bool,
    augment: bool,
    seed: int,
    folder: str = "imagewoof2",
) -> DataBundle:
    """Build ``imagewoof`` from ``root/<folder>/{train,val}/<wnid>/*.JPEG``.

    Images are read with PIL. The train and val splits are viewed in a fixed
    shuffled order so that ``train_subset`` (first N samples) is class balanced.

    Args:
        root: ``data.root``.
        image_size: Output side (Resize + CenterCrop; RandomResizedCrop + flip when
            ``augment``).
        channels: 3, or 1 for greyscale.
        download: Fetch ``<folder>.tgz`` from fast.ai's bucket when files are missing.
        augment: Training augmentation.
        seed: Unused (the order of the view is fixed).
        folder: ``imagewoof2`` (full size), ``imagewoof2-320`` or ``imagewoof2-160``.
    """
    del seed
    if folder not in FOLDERS:
        raise ValueError(f"data.folder={folder!r} is not allowed; allowed: {list(FOLDERS)}")
    train_dir, val_dir = imagewoof_dirs(root, folder)
    if download and not (_class_dirs(train_dir) and _class_dirs(val_dir)):
        _download(root, folder)
    missing = [path for path in (train_dir, val_dir) if not _class_dirs(path)]
    if missing:
        raise missing_files_error(
            "imagewoof",
            train_dir.parent,
            [path / "<class>/<image>.JPEG" for path in missing],
            f"({NUM_CLASSES} class folders each). No offline copy exists in this suite: "
            f"download {URL.format(folder=folder)} where internet exists with "
            f"data.download=true (or `python -m data.fetch imagewoof --root {root} --download`), "
            f"or copy the extracted {folder}/ folder to {train_dir.parent}.",
        )
    folder_dataset = _TORCHVISION.datasets.ImageFolder
    pil_loader = _TORCHVISION.datasets.folder.pil_loader
    train_tf, test_tf = _transforms(image_size, channels, augment)
    train, test = (
        folder_dataset(str(path), transform=tf, target_transform=label_to_tensor, loader=pil_loader)
        for path, tf in ((train_dir, train_tf), (val_dir, test_tf))
    )
    if train.classes != test.classes:
        raise ValueError(
            f"data.name='imagewoof': class folders of {train_dir} and {val_dir} differ: "
            f"{train.classes} vs {test.classes}"
        )
    return DataBundle(
        name="imagewoof",
        kind="image",
        train=shuffled_view(train),
        test=shuffled_view(test),
        graph=None,
        num_classes=len(train.classes),
        input_shape=(channels, image_size, image_size),
        note=f"imagewoof: {len(train)} train / {len(test)} val images from {train_dir.parent}",
    )
