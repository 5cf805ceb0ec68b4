"""CIFAR-10 and CIFAR-100 from torchvision's python-pickle folders under ``data.root``."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from data.bundle import DataBundle
from data.common import label_to_tensor, missing_paths
from data.errors import missing_files_error
from data.torchvision_compat import import_torchvision

# Per-channel statistics of the training images (pixels in [0, 1]).
CIFAR_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
NATIVE_SIZE = 32
CROP_PADDING = 4


_DATASETS = import_torchvision().datasets
_TRANSFORMS = import_torchvision().transforms
_check_integrity = _DATASETS.utils.check_integrity


class _PresenceFirstIntegrity:
    """Mixin for torchvision's CIFAR classes: md5 checked only when ``verify_md5``.

    torchvision's ``CIFAR10.__init__`` accepts the folder only when every file's md5
    equals the official one. The subclasses keep that check when ``verify_md5`` is
    True (the default for real runs) and, when it is False, accept any local copy
    whose files are all present (re-packed copies, the tiny fakes of the tests). The
    md5 check is never skipped silently: it takes ``data.verify_md5=false``.
    """

    verify_md5: bool = True

    def _md5(self, md5: str) -> str | None:
        return md5 if self.verify_md5 else None

    def _check_integrity(self) -> bool:
        folder = Path(self.root) / self.base_folder
        return all(
            _check_integrity(str(folder / filename), self._md5(md5))
            for filename, md5 in self.train_list + self.test_list
        )

    def _load_meta(self) -> None:
        path = Path(self.root) / self.base_folder / self.meta["filename"]
        if not _check_integrity(str(path), self._md5(self.meta["md5"])):
            raise RuntimeError(f"CIFAR metadata file {path} is missing or its md5 differs")
        with open(path, "rb") as handle:
            meta = pickle.load(handle, encoding="latin1")
        self.classes = meta[self.meta["key"]]
        self.class_to_idx = {label: index for index, label in enumerate(self.classes)}


class LocalCIFAR10(_PresenceFirstIntegrity, _DATASETS.CIFAR10):
    """torchvision ``CIFAR10``, md5 optional (see :class:`_PresenceFirstIntegrity`)."""

    def __init__(self, root: str, verify_md5: bool = True, **kwargs: Any) -> None:
        self.verify_md5 = verify_md5
        super().__init__(root, **kwargs)


class LocalCIFAR100(_PresenceFirstIntegrity, _DATASETS.CIFAR100):
    """torchvision ``CIFAR100``, md5 optional (see :class:`_PresenceFirstIntegrity`)."""

    def __init__(self, root: str, verify_md5: bool = True, **kwargs: Any) -> None:
        self.verify_md5 = verify_md5
        super().__init__(root, **kwargs)


CIFAR_CLASSES = {"cifar10": LocalCIFAR10, "cifar100": LocalCIFAR100}


def cifar_files(name: str, root: Path) -> tuple[Path, list[Path]]:
    """The folder and the files torchvision reads for ``name`` (cifar10 | cifar100)."""
    base = CIFAR_CLASSES[name]
    folder = Path(root) / base.base_folder
    names = [entry[0] for entry in base.train_list + base.test_list] + [base.meta["filename"]]
    return folder, [folder / filename for filename in names]


def _cifar_transforms(name: str, image_size: int, channels: int, augment: bool) -> tuple[Any, Any]:
    transforms = _TRANSFORMS
    mean, std = CIFAR_STATS[name]
    steps: list[Any] = []
    if channels == 1:
        steps.append(transforms.Grayscale(num_output_channels=1))
        mean, std = (sum(mean) / 3,), (sum(std) / 3,)  # approximate grey statistics
    if image_size != NATIVE_SIZE:
        steps.append(transforms.Resize(image_size))
    tail = [transforms.ToTensor(), transforms.Normalize(mean, std)]
    augmentation = [
        transforms.RandomCrop(image_size, padding=CROP_PADDING * image_size // NATIVE_SIZE),
        transforms.RandomHorizontalFlip(),
    ]
    train = transforms.Compose(steps + (augmentation if augment else []) + tail)
    test = transforms.Compose(steps + tail)
    return train, test


def _load_cifar(
    name: str,
    root: Path,
    image_size: int,
    channels: int,
    download: bool,
    augment: bool,
    verify_md5: bool,
) -> DataBundle:
    local_cifar = CIFAR_CLASSES[name]
    folder, files = cifar_files(name, root)
    if download and missing_paths(files):
        try:
            local_cifar(str(root), verify_md5=True, download=True)
        except Exception as error:  # network errors come in many types
            print(f"data.download=true: downloading {name} failed: {error}")
    missing = missing_paths(files)
    if missing:
        raise missing_files_error(
            name,
            folder,
            missing,
            f"No offline copy exists in this suite: download them where internet exists with "
            f"data.download=true (or `python -m data.fetch {name} --root {root} --download`), "
            f"or copy the extracted {folder.name}/ folder of {local_cifar.url} to {folder}.",
        )
    train_tf, test_tf = _cifar_transforms(name, image_size, channels, augment)
    try:
        train, test = (
            local_cifar(
                str(root),
                verify_md5=verify_md5,
                train=split,
                transform=tf,
                target_transform=label_to_tensor,
            )
            for split, tf in ((True, train_tf), (False, test_tf))
        )
    except RuntimeError as error:
        raise ValueError(
            f"data.verify_md5={verify_md5}: the {name} files under {folder} exist but differ "
            f"from the official ones ({error}); re-download them, or pass data.verify_md5=false "
            "for a re-packed copy you trust."
        ) from error
    return DataBundle(
        name=name,
        kind="image",
        train=train,
        test=test,
        graph=None,
        num_classes=len(train.classes),
        input_shape=(channels, image_size, image_size),
        note=f"{name}: {len(train)} train / {len(test)} test from {folder}",
    )


def load_cifar10(
    root: Path,
    image_size: int,
    channels: int,
    download: bool,
    augment: bool,
    seed: int,
    verify_md5: bool = True,
) -> DataBundle:
    """Build ``cifar10`` (50,000 / 10,000, 10 classes) from ``root/cifar-10-batches-py``."""
    del seed
    return _load_cifar("cifar10", root, image_size, channels, download, augment, verify_md5)


def load_cifar100(
    root: Path,
    image_size: int,
    channels: int,
    download: bool,
    augment: bool,
    seed: int,
    verify_md5: bool = True,
) -> DataBundle:
    """Build ``cifar100`` (50,000 / 10,000, 100 fine classes) from ``root/cifar-100-python``."""
    del seed
    return _load_cifar("cifar100", root, image_size, channels, download, augment, verify_md5)
