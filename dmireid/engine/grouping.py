"""Re-export of :mod:`dmireid.inference.identity_groups` (its old place)."""

from ..inference.identity_groups import (GroupingResult, cluster_folder, group_features, renumber_by_size,
                                         write_clusters_csv, write_contact_sheets)

__all__ = ["cluster_folder", "group_features", "renumber_by_size", "GroupingResult", "write_clusters_csv",
           "write_contact_sheets"]
