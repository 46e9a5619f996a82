"""Evaluation (spec §6): mAP / CMC / mINP of query against gallery features, streamed.

    evaluate(query_features, gallery_features, query_pids, gallery_pids, query_cams, gallery_cams,
             max_rank=50, chunk_size=None, rerank=False, k1=20, k2=6, lambda_value=0.3,
             device=None) -> {"mAP", "cmc", "mINP", "num_valid_queries"}
    pairwise_distance(query_features, gallery_features) -> Q×G float32 squared Euclidean
    KReciprocalReranker(query_features, gallery_features, k1=20, k2=6, lambda_value=0.3)
        .distance_rows(start, stop) -> re-ranked distances (Zhong et al. 2017), sparse inside
    visualize: rank-list strips, an HTML index and training curves (dmireid.evaluation.visualize)
"""

from .metrics import evaluate, pairwise_distance
from .rerank import KReciprocalReranker

__all__ = ["evaluate", "pairwise_distance", "KReciprocalReranker"]
