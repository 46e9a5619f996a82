"""A custom labeler: k-means on the unit features instead of Jaccard + DBSCAN.

    dmireid train plugins=[examples/plugins/kmeans_labeler.py] pseudo_labels.labeler=kmeans \
        pseudo_labels.options.num_clusters=500
"""

import numpy as np
from sklearn.cluster import KMeans

from dmireid.pseudo_labels import register_labeler


class KMeansLabeler:
    """``num_clusters`` k-means clusters (no outliers); clusters smaller than ``min_samples`` become -1."""

    def __init__(self, num_clusters: int = 100, min_samples: int = 1, seed: int = 0):
        self.num_clusters, self.min_samples, self.seed = int(num_clusters), int(min_samples), int(seed)

    def __call__(self, features):
        x = np.asarray(features, dtype=np.float32)
        labels = KMeans(n_clusters=min(self.num_clusters, len(x)), n_init=1, random_state=self.seed).fit_predict(x)
        sizes = np.bincount(labels)
        keep = sizes[labels] >= self.min_samples
        kept_ids = np.unique(labels[keep])
        renumber = np.full(len(sizes), -1, dtype=np.int64)
        renumber[kept_ids] = np.arange(len(kept_ids))  # clusters 0..C-1, no gaps
        return np.where(keep, renumber[labels], -1).astype(np.int64)


register_labeler("kmeans", KMeansLabeler)
