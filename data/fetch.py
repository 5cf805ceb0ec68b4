"""Put real datasets where :func:`data.build_data` reads them.

``python -m data.fetch fashion_mnist --root DIR`` copies Debian's package
``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist/*-ubyte.gz``; install
it with ``apt-get install dataset-fashion-mnist``) into ``DIR/FashionMNIST/raw``,
the layout torchvision's ``FashionMNIST`` reads, or else tries torchvision's
download. For ``cifar10``, ``cifar100``, ``imagewoof`` and ``cora`` it prints where
the files go and how to get them; ``--download`` tries the download (needs internet).
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from data.errors import DataNotFoundError
from data.factory import build_data
from data.mnist import FASHION_FILES, fashion_raw_dir
from data.registry import DATASETS

DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_MAGIC = {"images": 2051, "labels": 2049}


def _check_fashion_file(path: Path, name: str) -> None:
    """Check the IDX header of a Fashion-MNIST file (magic number, 28 x 28 images)."""
    kind = "images" if "images" in name else "labels"
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        header = handle.read(16)
    fields = [int.from_bytes(header[i : i + 4], "big") for i in range(0, len(header), 4)]
    expected = [IDX_MAGIC[kind]] + ([None, 28, 28] if kind == "images" else [None])
    if len(fields) < len(expected) or any(
        want is not None and got != want for got, want in zip(fields, expected, strict=False)
    ):
        raise ValueError(f"{path} is not a Fashion-MNIST {kind} IDX file (header {fields})")


def copy_fashion_mnist(source: Path, root: Path) -> list[Path]:
    """Copy the four IDX files from ``source`` into ``root/FashionMNIST/raw``.

    Accepts ``<name>.gz`` or uncompressed ``<name>`` in ``source``; writes the
    uncompressed files torchvision reads (and keeps the ``.gz`` copies).

    Args:
        source: Folder with the files, e.g. Debian's ``/usr/share/datasets/fashion-mnist``.
        root: ``data.root``.

    Returns:
        The uncompressed files written.

    Raises:
        FileNotFoundError: If a file is missing in ``source``.
    """
    raw = fashion_raw_dir(root)
    raw.mkdir(parents=True, exist_ok=True)
    written = []
    for name in FASHION_FILES:
        packed, plain = source / f"{name}.gz", source / name
        if packed.is_file():
            _check_fashion_file(packed, name)
            shutil.copyfile(packed, raw / f"{name}.gz")
            with gzip.open(packed, "rb") as reader, open(raw / name, "wb") as writer:
                shutil.copyfileobj(reader, writer)
        elif plain.is_file():
            _check_fashion_file(plain, name)
            shutil.copyfile(plain, raw / name)
        else:
            raise FileNotFoundError(f"neither {packed} nor {plain} exists")
        written.append(raw / name)
    return written


def fetch_fashion_mnist(root: Path, source: Path = DEBIAN_FASHION_DIR) -> bool:
    """Copy Fashion-MNIST from ``source``, else try torchvision's download.

    Returns:
        Whether the files are in place afterwards.
    """
    try:
        written = copy_fashion_mnist(source, root)
        print(f"copied Fashion-MNIST from {source} to {written[0].parent}")
        return True
    except FileNotFoundError as error:
        print(
            f"no local Fashion-MNIST ({error}); `apt-get install dataset-fashion-mnist` "
            "provides it. Trying torchvision's download ..."
        )
    return _build(root, "fashion_mnist", download=True)


def _build(root: Path, name: str, download: bool) -> bool:
    try:
        bundle = build_data(name, root=root, download=download)
    except DataNotFoundError as error:
        print(error)
        return False
    print(f"{name} is in place: {bundle.note}")
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status (0 when the data are in place)."""
    parser = argparse.ArgumentParser(prog="python -m data.fetch", description=__doc__)
    parser.add_argument("name", choices=sorted(DATASETS))
    parser.add_argument("--root", type=Path, default=Path("data_root"), help="data.root")
    parser.add_argument(
        "--source",
        type=Path,
        default=DEBIAN_FASHION_DIR,
        help="fashion_mnist only: folder with the *-ubyte(.gz) files",
    )
    parser.add_argument("--download", action="store_true", help="try to download (needs internet)")
    args = parser.parse_args(argv)
    if args.name == "fashion_mnist":
        done = fetch_fashion_mnist(args.root, args.source)
    elif args.name in ("mnist5k", "synthetic", "synthetic_graph"):
        print(f"{args.name} needs no files: {DATASETS[args.name].description}")
        done = True
    else:
        done = _build(args.root, args.name, download=args.download)
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())
