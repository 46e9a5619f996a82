"""The one place an epoch's results are written (detectron2's event storage, per epoch).

The trainer and the hooks ``put`` values during an epoch; each key is written once per epoch, so
no hook overwrites another's result and nothing depends on the order hooks run in. The writers
(``metrics.jsonl``, checkpoints) read :attr:`EventStorage.latest` in the ``write_epoch`` moment,
after every producer has run.

    storage.begin_epoch(3)
    storage.put(loss=0.71, num_clusters=40)
    storage.latest            # {"epoch": 3, "loss": 0.71, "num_clusters": 40} (a copy)
    storage.end_epoch()       # appended to storage.history
"""

from __future__ import annotations

from typing import Any


class EventStorage:
    """The current epoch's results (write-once keys, in write order) and every finished epoch's."""

    def __init__(self) -> None:
        self.current: dict[str, Any] = {}  # the epoch being run (read it through ``latest``)
        self.history: list[dict[str, Any]] = []  # one dict per finished epoch, oldest first

    def begin_epoch(self, epoch: int, **values: Any) -> None:
        self.current = {"epoch": epoch}
        self.put(**values)

    def put(self, **values: Any) -> None:
        """Write ``values`` for this epoch; a key already written this epoch is a ValueError."""
        again = sorted(set(values) & set(self.current))
        if again:
            raise ValueError(f"epoch {self.current.get('epoch')}: {', '.join(again)} already written this epoch "
                             f"(each result has one writer)")
        self.current.update(values)

    @property
    def latest(self) -> dict[str, Any]:
        """A copy of this epoch's results so far."""
        return dict(self.current)

    def get(self, key: str, default: Any = None) -> Any:
        return self.current.get(key, default)

    def __contains__(self, key: str) -> bool:
        return key in self.current

    def end_epoch(self) -> None:
        self.history.append(dict(self.current))
