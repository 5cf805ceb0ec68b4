"""Dataset factory: real loaders, the embedded ``mnist5k`` default, and synthetic data.

```python
from data import build_data, make_loader
bundle = build_data("mnist5k", image_size=32, channels=3)
loader = make_loader(bundle.train, batch_size=128, shuffle=True, seed=0)
```
"""

from data.bundle import DataBundle
from data.errors import DataNotFoundError
from data.factory import build_data
from data.loader import make_loader
from data.registry import DATASETS, DatasetEntry

__all__ = [
    "DATASETS",
    "DataBundle",
    "DataNotFoundError",
    "DatasetEntry",
    "build_data",
    "make_loader",
]
