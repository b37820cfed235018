"""Retrieval metrics: rank every artwork for each drawing and score where the relevant ones land.

Definitions (thesis sec. 4.5 and table 6.1; see docs/design.md, "Method"):

- Ranking: artworks in descending similarity (ascending cosine distance). Ties are broken by gallery
  index ascending, i.e. what a stable sort of ``-score`` gives. Ranks are 0-based, in [0, G-1].
- ``MP`` (Mean Position): the 0-based rank of every relevant (drawing, artwork) pair, averaged over
  all relevant pairs. (The thesis' printed formula divides by the number of drawings; the two agree
  when each drawing has one artwork.)
- ``MMP`` (Minimum Mean Position): the best (lowest) rank among a drawing's relevant artworks,
  averaged over drawings.
- ``R@k``: share of a drawing's relevant artworks within its top k, averaged over drawings, in percent.
- ``MAP``: the standard average precision over the full ranking, averaged over drawings, in percent:
  ``AP = 1/|R| * sum_{r in R} precision@(rank_r + 1)``. The thesis' printed sum stops at ``|A_d|``
  (read as a typo) and its code divides by the relevant items found; neither is used here. Since the
  full ranking always contains every relevant item, "found" and ``|R|`` coincide for a full ranking.
- ``n_queries``, ``n_pairs``: the number of drawings and of relevant pairs scored.

Every query must have at least one relevant item; duplicates within a query's relevant set are an error.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np

DEFAULT_KS: tuple[int, ...] = (1, 5, 10, 20, 50, 100, 200, 400)


def _check_relevant(
    relevant: Sequence[np.ndarray], n_queries: int, n_gallery: int
) -> list[np.ndarray]:
    """Validate per-query relevant index arrays; return them as 1-D int64 arrays."""
    if len(relevant) != n_queries:
        raise ValueError(f"relevant has {len(relevant)} entries but there are {n_queries} queries")
    out: list[np.ndarray] = []
    empty: list[int] = []
    for q, rel in enumerate(relevant):
        arr = np.asarray(rel).reshape(-1)
        if arr.size == 0:
            empty.append(q)
            out.append(arr.astype(np.int64))
            continue
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"query {q}: relevant indices must be integers, got dtype {arr.dtype}")
        arr = arr.astype(np.int64)
        if arr.min() < 0 or arr.max() >= n_gallery:
            raise ValueError(f"query {q}: relevant index out of range [0, {n_gallery - 1}]: {arr}")
        if np.unique(arr).size != arr.size:
            raise ValueError(f"query {q}: duplicate relevant indices {arr}")
        out.append(arr)
    if empty:
        raise ValueError(f"queries with no relevant item: {empty}")
    return out


def _ranks_of(row: np.ndarray, rel: np.ndarray) -> np.ndarray:
    """0-based ranks of gallery items ``rel`` (m,) in one score row (G,), ties by index ascending."""
    target = row[rel][:, None]  # (m, 1)
    idx = np.arange(row.shape[0])[None, :]  # (1, G)
    better = (row[None, :] > target) | ((row[None, :] == target) & (idx < rel[:, None]))
    return better.sum(axis=1).astype(np.int64)  # (m,)


def relevant_ranks(scores: np.ndarray, relevant: Sequence[np.ndarray]) -> list[np.ndarray]:
    """0-based rank of each relevant gallery item in its query's full ranking.

    scores: (Q, G) similarities, higher = closer. relevant: Q arrays of gallery indices.
    Returns Q int64 arrays, ranks in the order the indices were given. The ranking is by descending
    score with ties broken by gallery index ascending (a stable sort); no row is sorted: the rank is
    #(score > s_r) + #(score == s_r and index < r).
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be (Q, G), got shape {scores.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or infinite values")
    rel = _check_relevant(relevant, scores.shape[0], scores.shape[1])
    return [_ranks_of(scores[q], rel[q]) for q in range(scores.shape[0])]


def metrics_from_ranks(
    ranks: Sequence[np.ndarray], ks: Sequence[int] = DEFAULT_KS
) -> dict[str, float]:
    """Metrics (see module docstring) from per-query 0-based ranks of the relevant items (Q arrays)."""
    if len(ranks) == 0:
        raise ValueError("no queries to score")
    if any(int(k) < 1 for k in ks):
        raise ValueError(f"every k must be >= 1, got {list(ks)}")
    empty = [q for q, r in enumerate(ranks) if np.asarray(r).size == 0]
    if empty:
        raise ValueError(f"queries with no relevant item: {empty}")
    sorted_ranks = [np.sort(np.asarray(r, dtype=np.int64).reshape(-1)) for r in ranks]
    all_ranks = np.concatenate(sorted_ranks)
    out: dict[str, float] = {
        "MP": float(all_ranks.mean()),
        "MMP": float(np.mean([r[0] for r in sorted_ranks])),
    }
    for k in ks:
        out[f"R@{int(k)}"] = 100.0 * float(np.mean([(r < k).mean() for r in sorted_ranks]))
    # with distinct sorted ranks r_1 < ... < r_m, precision at the i-th hit is i / (r_i + 1)
    aps = [float(np.mean(np.arange(1, r.size + 1) / (r + 1.0))) for r in sorted_ranks]
    out["MAP"] = 100.0 * float(np.mean(aps))
    out["n_queries"] = float(len(sorted_ranks))
    out["n_pairs"] = float(all_ranks.size)
    return out


def retrieval_metrics(
    scores: np.ndarray, relevant: Sequence[np.ndarray], ks: Sequence[int] = DEFAULT_KS
) -> dict[str, float]:
    """MP, MMP, R@k (percent), MAP (percent), n_queries, n_pairs for dense (Q, G) similarity scores."""
    return metrics_from_ranks(relevant_ranks(scores, relevant), ks)


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows of (N, D) scaled to unit L2 norm (zero rows stay zero), as float64."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be (N, D), got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def scores_in_chunks(
    query_emb: np.ndarray, gallery_emb: np.ndarray, chunk: int = 1024
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, block)``: cosine similarities (c, G), float64, of queries start..start+c-1.

    query_emb: (Q, D), gallery_emb: (G, D); neither needs to be normalised. Only one (chunk, G)
    block is in memory at a time.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    q = _l2_normalise(query_emb)
    g = _l2_normalise(gallery_emb)
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"embedding sizes differ: queries {q.shape[1]}, gallery {g.shape[1]}")
    for start in range(0, q.shape[0], chunk):
        yield start, q[start : start + chunk] @ g.T


def retrieval_metrics_from_embeddings(
    query_emb: np.ndarray,
    gallery_emb: np.ndarray,
    relevant: Sequence[np.ndarray],
    ks: Sequence[int] = DEFAULT_KS,
    chunk: int = 1024,
) -> dict[str, float]:
    """`retrieval_metrics` on cosine similarities of (Q, D) queries vs (G, D) gallery, in chunks."""
    n_q, n_g = np.shape(query_emb)[0], np.shape(gallery_emb)[0]
    rel = _check_relevant(relevant, n_q, n_g)
    ranks: list[np.ndarray] = []
    for start, block in scores_in_chunks(query_emb, gallery_emb, chunk):
        ranks.extend(relevant_ranks(block, rel[start : start + block.shape[0]]))
    return metrics_from_ranks(ranks, ks)


def aggregate(runs: Sequence[Mapping[str, float]]) -> dict[str, tuple[float, float]]:
    """Per key: (mean, sample std with ddof=1) over runs, e.g. folds; std is 0.0 for a single run."""
    if len(runs) == 0:
        raise ValueError("no runs to aggregate")
    keys = list(runs[0])
    for i, run in enumerate(runs):
        if set(run) != set(keys):
            raise ValueError(f"run {i} has keys {sorted(run)}, run 0 has {sorted(keys)}")
    out: dict[str, tuple[float, float]] = {}
    for key in keys:
        vals = np.array([float(run[key]) for run in runs], dtype=np.float64)
        std = float(vals.std(ddof=1)) if vals.size > 1 else 0.0
        out[key] = (float(vals.mean()), std)
    return out


def _key_order(key: str) -> tuple[int, float, str]:
    if key.startswith("R@") and key[2:].isdigit():
        return (3, float(key[2:]), key)
    fixed = {"MAP": 0, "MP": 1, "MMP": 2, "n_queries": 4, "n_pairs": 5}
    return (fixed.get(key, 6), 0.0, key)


def format_table(metrics: Mapping[str, float] | Mapping[str, tuple[float, float]]) -> str:
    """A fixed-width text table, one line per metric: ``name  value`` or ``name  mean ± std``."""
    if not metrics:
        return ""
    width = max(len(k) for k in metrics)
    lines = []
    for key in sorted(metrics, key=_key_order):
        value = metrics[key]
        if isinstance(value, tuple):
            mean, std = value
            text = f"{mean:>10.2f} ± {std:.2f}"
        elif key.startswith("n_") and float(value).is_integer():
            text = f"{int(value):>10d}"
        else:
            text = f"{float(value):>10.2f}"
        lines.append(f"{key:<{width}}  {text}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# copy detection over the whole collection: every (drawing, artwork) result of every query ranked
# together, copies and non-copies, as in copy-detection benchmarks (micro-average precision)


def precision_recall(
    scores: np.ndarray, positive: np.ndarray, n_positive: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall at every distinct score threshold, highest first (results with equal
    scores enter together). Recall is over `n_positive` copies (default: the positives given), so
    copies that no query returned count as missed."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    positive = np.asarray(positive, dtype=bool).reshape(-1)
    if scores.shape != positive.shape:
        raise ValueError(f"{scores.size} scores but {positive.size} labels")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or infinite values")
    total = int(positive.sum()) if n_positive is None else int(n_positive)
    if total < int(positive.sum()) or total == 0:
        raise ValueError(f"n_positive must be >= the {int(positive.sum())} positives given and > 0")
    order = np.argsort(-scores, kind="stable")
    s, hit = scores[order], positive[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]  # the end of each tied group
    tp = np.cumsum(hit)[last]
    return tp / (last + 1.0), tp / float(total)


def micro_average_precision(
    scores: np.ndarray, positive: np.ndarray, n_positive: int | None = None
) -> float:
    """Average precision of all results pooled, in percent: sum over thresholds of precision
    times the recall gained there (scikit-learn's definition; recall over `n_positive`)."""
    precision, recall = precision_recall(scores, positive, n_positive)
    gained = np.diff(np.r_[0.0, recall])
    return 100.0 * float(np.sum(precision * gained))


def recall_at_precision(
    scores: np.ndarray, positive: np.ndarray, n_positive: int | None = None, target: float = 0.9
) -> float:
    """The highest recall, in percent, at a threshold whose precision is at least `target` (0 when
    no threshold reaches it)."""
    precision, recall = precision_recall(scores, positive, n_positive)
    reached = precision >= target
    return 100.0 * float(recall[reached].max()) if reached.any() else 0.0


# ----------------------------------------------------------------------------------------------
# label tasks: verification (triplet accuracy, ROC AUC of same/different pairs) and
# classification (top-1, per-class precision/recall, confusion matrix)


def _unit(emb: np.ndarray) -> np.ndarray:
    emb = np.asarray(emb, dtype=np.float64)
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


def triplet_accuracy(emb: np.ndarray, triplets: np.ndarray) -> float:
    """Share of triplets (T, 3) of row indices (anchor, positive, negative) into ``emb`` (N, D)
    whose positive is strictly closer to the anchor than the negative, in cosine distance
    (Painter By Numbers' test accuracy); a tie counts as a miss."""
    triplets = np.asarray(triplets, dtype=np.int64).reshape(-1, 3)
    if len(triplets) == 0:
        raise ValueError("triplet accuracy of no triplets")
    u = _unit(emb)
    a, p, n = u[triplets[:, 0]], u[triplets[:, 1]], u[triplets[:, 2]]
    d_ap = 1.0 - (a * p).sum(axis=1)
    d_an = 1.0 - (a * n).sum(axis=1)
    return float(np.mean(d_ap < d_an))


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` (P,) for the boolean ``positive`` (P,): the chance
    that a random positive scores above a random negative, ties counting one half (the
    Mann-Whitney U statistic over average ranks)."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    positive = np.asarray(positive, dtype=bool).reshape(-1)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"ROC AUC needs positives and negatives, got {n_pos} and {n_neg}")
    _, where, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[where]  # 1-based, averaged over ties
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def pair_scores(emb: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarity and same-label flag of every pair ``i < j`` of ``emb`` (N, D) with
    ``labels`` (N,), row-major: two (N(N-1)/2,) arrays."""
    u = _unit(emb)
    i, j = np.triu_indices(len(u), k=1)
    labels = np.asarray(labels)
    return (u[i] * u[j]).sum(axis=1), labels[i] == labels[j]


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C) int64 counts: row = true class, column = predicted class."""
    y_true = np.asarray(y_true, dtype=np.int64).reshape(-1)
    y_pred = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    for name, y in (("true", y_true), ("predicted", y_pred)):
        if len(y) and (y.min() < 0 or y.max() >= n_classes):
            raise ValueError(f"{name} class out of range [0, {n_classes - 1}]")
    out = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(out, (y_true, y_pred), 1)
    return out


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]
) -> dict[str, object]:
    """Top-1 accuracy (%), per-class precision, recall, F1 (%) and support, their unweighted
    (macro) means, and the confusion matrix (rows true, columns predicted) of class indices
    ``y_true``, ``y_pred`` (n,) over ``classes``. A class never predicted has precision 0; a
    class with no images has recall 0 and is left out of the macro means."""
    n_classes = len(classes)
    cm = confusion_matrix(y_true, y_pred, n_classes)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    tp = np.diag(cm)
    precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
    recall = np.where(support > 0, tp / np.maximum(support, 1), 0.0)
    denom = precision + recall
    f1 = np.where(denom > 0, 2 * precision * recall / np.where(denom > 0, denom, 1), 0.0)
    present = support > 0
    total = int(cm.sum())
    per_class = [
        {
            "label": str(classes[c]),
            "precision": 100.0 * float(precision[c]),
            "recall": 100.0 * float(recall[c]),
            "f1": 100.0 * float(f1[c]),
            "support": int(support[c]),
            "predicted": int(predicted[c]),
        }
        for c in range(n_classes)
    ]

    def macro(values: np.ndarray) -> float:
        return 100.0 * float(values[present].mean()) if present.any() else 0.0

    return {
        "top1": 100.0 * float(tp.sum()) / total if total else 0.0,
        "macro_precision": macro(precision),
        "macro_recall": macro(recall),
        "macro_f1": macro(f1),
        "n_images": total,
        "per_class": per_class,
        "confusion": cm.tolist(),
    }
