"""What a dataset loader returns: ``(path, pid, camid)`` samples in train / query / gallery lists.

    ds = ReIDDataset("market1501", "/data/Market-1501-v15.09.15", train, query, gallery)
    print(ds.statistics_table())
"""

from __future__ import annotations

from dataclasses import dataclass, field

Sample = tuple[str, int, int]  # (path, pid, camid); camid = camera number - 1


@dataclass
class ReIDDataset:
    """Train / query / gallery sample lists of one dataset (each sorted by path)."""

    name: str
    root: str
    train: list[Sample] = field(default_factory=list)
    query: list[Sample] = field(default_factory=list)
    gallery: list[Sample] = field(default_factory=list)
    # per training image, aligned with ``train`` (None: the dataset has none): the global tracklet
    # id (one track of one camera; -1 = not in a tracklet) and the frame number (-1 = unknown)
    train_tracklets: list[int] | None = None
    train_frames: list[int] | None = None

    def split_stats(self, split: str) -> tuple[int, int, int]:
        """(# ids, # images, # cameras) of ``split``; ids count pid >= 0 (distractor 0 included)."""
        samples = getattr(self, split)
        pids = {pid for _, pid, _ in samples if pid >= 0}
        return len(pids), len(samples), len({cam for _, _, cam in samples})

    @property
    def num_train_ids(self) -> int:
        return self.split_stats("train")[0]

    @property
    def num_cameras(self) -> int:
        """Cameras over all splits (max camid + 1)."""
        cams = [cam for split in (self.train, self.query, self.gallery) for _, _, cam in split]
        return max(cams) + 1 if cams else 0

    def statistics_table(self) -> str:
        """The usual table: subset | # ids | # images | # cameras, for train/query/gallery."""
        lines = [f"{self.name} ({self.root})",
                 "  subset   | # ids | # images | # cameras",
                 "  ---------+-------+----------+----------"]
        for split in ("train", "query", "gallery"):
            ids, images, cams = self.split_stats(split)
            lines.append(f"  {split:<8} | {ids:5d} | {images:8d} | {cams:9d}")
        return "\n".join(lines)
