"""Helpers shared by the benchmark scripts (``bench_optimizers``, ``bench_complexity``).

Timing (wall clock with the device synchronised), the machine description that
every output carries, peak-memory probes, the benchmark models, log-log slope
fits and CSV/Markdown writers. Nothing here knows about a particular optimizer.
"""

from __future__ import annotations

import csv
import ctypes
import ctypes.util
import math
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

BENCH_MODELS = ("vgg", "vit", "tiny_vgg", "tiny_vit")
"""Model names accepted by :func:`build_bench_model`."""


MALLOC_MODES = ("default", "heap")
"""How the C allocator serves large tensors (see :func:`configure_malloc`)."""

_malloc_mode = "default"

# glibc's mallopt parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_DEFAULT_MMAP_MAX = 65536
_DEFAULT_TRIM_THRESHOLD = 128 * 1024


def configure_malloc(mode: str) -> None:
    """Choose how glibc serves large allocations in this process (call it first).

    ``"default"`` leaves glibc as it is: a block above its mmap threshold (at most
    32 MiB: a dense Kronecker factor, a large activation) is a fresh mapping, faulted
    in page by page on first touch and unmapped when freed, so a tensor freed and
    allocated again every step pays its page faults every step (on the 2-core VM of
    ``results/bench`` about 15% of AdamW's VGG iteration). ``"heap"`` serves every
    block from the heap and keeps freed memory (``mallopt(M_MMAP_MAX, 0)``,
    ``mallopt(M_TRIM_THRESHOLD, 2^31 - 1)``), as tcmalloc or jemalloc would: warm pages
    are reused, and the resident size does not shrink after a peak.

    Args:
        mode: One of :data:`MALLOC_MODES`.
    """
    global _malloc_mode
    if mode not in MALLOC_MODES:
        raise ValueError(f"malloc={mode!r} is invalid: allowed values are {list(MALLOC_MODES)}")
    if mode == _malloc_mode:
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        raise ValueError(f"malloc={mode!r} is invalid here: this C library has no mallopt")
    heap = mode == "heap"  # else back to glibc's documented defaults
    mallopt(_M_MMAP_MAX, 0 if heap else _DEFAULT_MMAP_MAX)
    mallopt(_M_TRIM_THRESHOLD, 2**31 - 1 if heap else _DEFAULT_TRIM_THRESHOLD)
    _malloc_mode = mode


# ----- machine -------------------------------------------------------------------------
def cpu_model() -> str:
    """CPU model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_description(device: torch.device) -> dict[str, str]:
    """What the numbers were measured on: CPU, threads, load, torch, accelerator.

    Args:
        device: The device the benchmark runs on.

    Returns:
        Ordered ``{field: value}`` strings.
    """
    try:
        load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        load = "n/a"
    description = {
        "cpu": cpu_model(),
        "logical_cpus": str(os.cpu_count()),
        "torch_threads": str(torch.get_num_threads()),
        "load_average_1_5_15min": load,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "malloc": _malloc_mode,
    }
    if device.type == "cuda":
        description["gpu"] = torch.cuda.get_device_name(device)
    return description


def machine_markdown(description: dict[str, str]) -> str:
    """The machine description as a Markdown bullet list."""
    return "\n".join(f"- {key}: {value}" for key, value in description.items())


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA if available else CPU; otherwise the named device.

    Args:
        name: ``"auto"``, ``"cpu"`` or ``"cuda"`` (optionally ``"cuda:<index>"``).

    Returns:
        The device.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu" or name.startswith("cuda"):
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device={name!r} is invalid: CUDA is not available here")
        return torch.device(name)
    raise ValueError(f"device={name!r} is invalid: allowed values are auto, cpu, cuda[:N]")


# ----- timing --------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    """Wait for queued device work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds one call of ``fn`` takes, with the device synchronised before and after."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def median(values: Iterable[float]) -> float:
    """Median of the finite values (``nan`` when there are none)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(finite) if finite else math.nan


def repeat_median(
    fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 1
) -> float:
    """Median seconds of ``repeats`` timed calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    return median(time_call(fn, device) for _ in range(repeats))


# ----- memory --------------------------------------------------------------------------
def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) * (1 if platform.system() == "Darwin" else 1024)


def _proc_status_bytes(field: str) -> int | None:
    """``VmRSS``/``VmHWM`` of this process from ``/proc/self/status`` (Linux only)."""
    try:
        with open("/proc/self/status", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class PeakRSS:
    """Peak resident memory above a baseline, from now on (CPU memory probe).

    On Linux the kernel's high-water mark is reset (``/proc/self/clear_refs``, value
    5) and the baseline is the current RSS, so the result is the peak of whatever is
    allocated after construction. Elsewhere it falls back to the ``getrusage`` peak
    minus the peak so far, which reads 0 while the earlier peak is not exceeded.
    """

    def __init__(self) -> None:
        self.exact = False
        try:
            with open("/proc/self/clear_refs", "w", encoding="utf-8") as handle:
                handle.write("5")
            current = _proc_status_bytes("VmRSS")
            self.exact = current is not None and _proc_status_bytes("VmHWM") is not None
        except OSError:
            current = None
        self.baseline = current if self.exact else peak_rss_bytes()

    def peak_bytes(self) -> int:
        """Peak RSS since construction minus the baseline (>= 0)."""
        peak = _proc_status_bytes("VmHWM") if self.exact else peak_rss_bytes()
        return max(0, int(peak) - self.baseline)


def tensor_bytes(tensors: Iterable[Any]) -> int:
    """Bytes of the tensors among ``tensors`` (other values are ignored)."""
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, Tensor))


def torch_optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of every tensor in a ``torch.optim`` optimizer's per-parameter state."""
    return sum(tensor_bytes(state.values()) for state in optimizer.state.values())


# ----- models --------------------------------------------------------------------------
def build_bench_model(name: str, num_classes: int = 10, image_size: int = 32) -> nn.Module:
    """A model of the performance targets (or a tiny stand-in for tests).

    * ``vgg``: CIFAR VGG16-bn (``models.build_model("vgg")``);
    * ``vit``: timm ``VisionTransformer``, dim 192, depth 6, 3 heads, patch 4;
    * ``tiny_vgg``: VGG-11-bn at 1/16 width; ``tiny_vit``: dim 32, depth 1, patch 8.

    Args:
        name: One of :data:`BENCH_MODELS`.
        num_classes: Output classes.
        image_size: Side of the square RGB input.

    Returns:
        The model (float32, CPU).
    """
    if name in ("vgg", "tiny_vgg"):
        from models import build_model

        options = {"depth": 11, "width_multiplier": 0.0625} if name == "tiny_vgg" else {}
        return build_model(
            "vgg", num_classes=num_classes, input_shape=(3, image_size, image_size), **options
        )
    if name in ("vit", "tiny_vit"):
        from data.torchvision_compat import import_torchvision

        import_torchvision()
        from timm.models.vision_transformer import VisionTransformer

        size = {"vit": (4, 192, 6, 3), "tiny_vit": (8, 32, 1, 2)}[name]
        patch, dim, depth, heads = size
        return VisionTransformer(
            img_size=image_size,
            patch_size=patch,
            in_chans=3,
            num_classes=num_classes,
            embed_dim=dim,
            depth=depth,
            num_heads=heads,
        )
    raise ValueError(f"model={name!r} is invalid: allowed values are {list(BENCH_MODELS)}")


# ----- fits ----------------------------------------------------------------------------
def loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ``log y`` against ``log x`` (``nan`` for < 2 usable points).

    Args:
        xs: Positive abscissae (e.g. widths ``d``).
        ys: Positive measurements (e.g. seconds); non-positive or non-finite are dropped.

    Returns:
        The fitted exponent ``p`` in ``y ~ c x^p``.
    """
    points = [
        (math.log(x), math.log(y))
        for x, y in zip(xs, ys)
        if x > 0 and y is not None and math.isfinite(y) and y > 0
    ]
    if len(points) < 2:
        return math.nan
    mean_x = sum(p[0] for p in points) / len(points)
    mean_y = sum(p[1] for p in points) / len(points)
    spread = sum((p[0] - mean_x) ** 2 for p in points)
    if spread == 0.0:
        return math.nan
    return sum((p[0] - mean_x) * (p[1] - mean_y) for p in points) / spread


# ----- output --------------------------------------------------------------------------
def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Write ``rows`` (dicts; columns in first-seen order) as CSV, creating the folder."""
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def read_csv_rows(path: Path) -> list[dict[str, Any]]:
    """Rows written by :func:`write_csv`, with numbers parsed back (ints, floats, nan)."""

    def parse(text: str) -> Any:
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
        return text

    with open(path, newline="", encoding="utf-8") as handle:
        return [{k: parse(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def format_value(value: Any) -> str:
    """Compact text for a table cell: 4 significant digits for floats, ``-`` for nan/None."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A Markdown table of ``rows`` restricted to ``columns`` (missing cells: ``-``)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(format_value(row.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def human_bytes(count: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    if isinstance(count, bool) or not isinstance(count, (int, float)) or not math.isfinite(count):
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    return f"{count:.1f} GiB"
