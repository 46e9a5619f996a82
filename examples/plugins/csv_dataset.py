"""A custom dataset: images listed in a CSV file (``path,pid,camid,split`` with split train/query/gallery).

    dmireid train plugins=[examples/plugins/csv_dataset.py] data.name=csv_list data.root=/data/crops \
        data.options.list_file=list.csv
"""

import csv
from pathlib import Path

from dmireid.data import ReIDDataset, register_dataset
from dmireid.errors import DmireidError


def load_csv_list(root, list_file: str = "list.csv") -> ReIDDataset:
    """Rows ``path,pid,camid,split``; paths relative to ``root``; pid -1 = unlabelled."""
    root = Path(root)
    path = root / list_file
    if not path.is_file():
        raise DmireidError(f"csv_list: {path} does not exist (data.options.list_file)")
    splits = {"train": [], "query": [], "gallery": []}
    with open(path, newline="") as handle:
        for line, row in enumerate(csv.DictReader(handle), 2):
            if row.get("split") not in splits:
                raise DmireidError(f"{path}:{line}: split must be train, query or gallery, got {row.get('split')!r}")
            splits[row["split"]].append((str(root / row["path"]), int(row["pid"]), int(row["camid"])))
    return ReIDDataset("csv_list", str(root), **splits)


register_dataset("csv_list", load_csv_list)
