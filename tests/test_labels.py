"""Label-based tasks without Ray: labelled sets, splits, samplers, losses, mining and metrics
against hand computations (and scikit-learn where it is installed)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from drawmatch.training.labels import (
    LabelsConfig,
    label_disjoint_split,
    load_labelled,
    pk_batches,
    random_triplets,
    stratified_split,
)
from tests.conftest import hand_catalogue, make_image

# ----------------------------------------------------------------------------------------------
# loading


def test_folder_per_label_with_depth_counts_what_it_leaves_out(tmp_path):
    root = tmp_path / "pandora"
    for i in range(3):
        make_image(root / "impressionism" / "monet" / f"m{i}.jpg", seed=i)
    make_image(root / "impressionism" / "degas" / "d0.jpg", seed=5)
    for i in range(2):
        make_image(root / "cubism" / "picasso" / f"p{i}.png", seed=10 + i, fmt="PNG")
    make_image(root / "baroque" / "b0.jpg", seed=20)  # one image: dropped at min_per_label=2
    make_image(root / "loose.jpg", seed=21)  # no folder: no label
    (root / "notes.txt").write_text("not an image")

    data = load_labelled(LabelsConfig(images=str(root)))
    assert data.labels == ["cubism", "impressionism"]
    assert data.images.set_index("id").loc["impressionism/degas/d0.jpg", "label"] == "impressionism"
    assert len(data.images) == 6
    s = data.summary
    assert (s["files_found"], s["unlabelled"], s["dropped_labels"], s["dropped_images"]) == (
        8,
        1,
        1,
        1,
    )
    assert s["dropped_label_examples"] == ["baroque"]

    by_artist = load_labelled(LabelsConfig(images=str(root), folder_depth=2))
    assert by_artist.labels == ["cubism/picasso", "impressionism/monet"]  # degas has one image
    # a shallower image keeps the folders it has: baroque/b0.jpg is `baroque` (then dropped)
    assert by_artist.summary["unlabelled"] == 1
    assert by_artist.summary["dropped_label_examples"] == ["baroque", "impressionism/degas"]


def test_painter_by_numbers_csv_any_column_and_missing_files(tmp_path):
    images = tmp_path / "train"
    rows = []
    for i, (artist, style) in enumerate(
        [("A", "Cubism"), ("A", "Cubism"), ("B", "Cubism"), ("B", "Baroque"), ("C", "Baroque")]
    ):
        make_image(images / f"{i}.jpg", seed=i)
        rows.append((f"{i}.jpg", artist, f"t{i}", style, "portrait", "1900"))
    rows.append(("99.jpg", "C", "gone", "Baroque", "portrait", ""))  # not downloaded
    csv = tmp_path / "train_info.csv"
    pd.DataFrame(rows, columns=["filename", "artist", "title", "style", "genre", "date"]).to_csv(
        csv, index=False
    )
    by_artist = load_labelled(
        LabelsConfig(images=str(images), labels_csv=str(csv), label_column="artist")
    )
    assert by_artist.images["label"].tolist() == ["A", "A", "B", "B"]  # C has one image left
    assert by_artist.summary["missing_files"] == 1
    assert by_artist.summary["missing_examples"] == ["99.jpg"]
    by_style = load_labelled(
        LabelsConfig(images=str(images), labels_csv=str(csv), label_column="style")
    )
    assert dict(zip(by_style.images["id"], by_style.images["label"])) == {
        "0.jpg": "Cubism",
        "1.jpg": "Cubism",
        "2.jpg": "Cubism",
        "3.jpg": "Baroque",
        "4.jpg": "Baroque",
    }
    with pytest.raises(ValueError, match="no column"):
        load_labelled(
            LabelsConfig(images=str(images), labels_csv=str(csv), label_column="movement")
        )


def test_a_pattern_turns_a_path_column_into_labels(tmp_path):
    for i in range(4):
        make_image(tmp_path / f"{i}.jpg", seed=i)
    csv = tmp_path / "meta.csv"
    pd.DataFrame(
        {
            "file": ["0.jpg", "1.jpg", "2.jpg", "3.jpg"],
            "source_path": [
                "stamps/animals/birds/a.png",
                "stamps/animals/birds/b.png",
                "stamps/food/fruit/c.png",
                "stamps/kettle.png",  # no category folder: no label
            ],
        }
    ).to_csv(csv, index=False)
    config = LabelsConfig(
        images=str(tmp_path),
        labels_csv=str(csv),
        id_column="file",
        label_column="source_path",
        label_pattern=r"stamps/([^/]+)/",
        min_per_label=1,
    )
    data = load_labelled(config)
    assert data.images["label"].tolist() == ["animals", "animals", "food"]
    assert data.summary["unlabelled"] == 1


def test_duplicate_names_in_a_label_csv_are_refused(tmp_path):
    make_image(tmp_path / "a.jpg")
    csv = tmp_path / "labels.csv"
    csv.write_text("filename,label\na.jpg,x\na.jpg,y\n")
    with pytest.raises(ValueError, match="more than once"):
        load_labelled(LabelsConfig(images=str(tmp_path), labels_csv=str(csv)))


def test_catalogue_column_or_labels_csv_by_id(tmp_path):
    files = [make_image(tmp_path / "img" / f"art{i}.jpg", seed=i) for i in range(5)]
    out = tmp_path / "out"
    df = hand_catalogue(out, {"artwork": files})
    df["artist"] = ["Monet", "Monet", "Kahlo", "Kahlo", None]
    from drawmatch.data import catalogue as cat

    cat.write_catalogue(df, out)
    data = load_labelled(LabelsConfig(label_column="artist"), str(out))
    assert data.images["label"].tolist() == ["Monet", "Monet", "Kahlo", "Kahlo"]
    assert data.images["path"].iloc[0].endswith("art0.jpg")
    assert data.summary["unlabelled"] == 1

    csv = tmp_path / "labels.csv"
    csv.write_text("id,label\nart0,a\nart1,a\nart2,b\nart3,b\nnope,b\n")
    by_csv = load_labelled(LabelsConfig(labels_csv=str(csv)), str(out))
    assert by_csv.images["id"].tolist() == ["art0", "art1", "art2", "art3"]
    assert by_csv.summary["unknown_ids"] == 1
    with pytest.raises(ValueError, match="no column 'movement'"):
        load_labelled(LabelsConfig(label_column="movement"), str(out))


# ----------------------------------------------------------------------------------------------
# splits


def _labels(counts: dict[str, int]) -> pd.Series:
    return pd.Series([k for k, n in counts.items() for _ in range(n)])


def test_label_disjoint_split_keeps_test_labels_unseen():
    counts = {f"artist{i:02d}": 2 + (i % 7) for i in range(30)}
    labels = _labels(counts)
    sets = label_disjoint_split(labels, test_fraction=0.2, val_fraction=0.1, seed=3)
    test_labels = set(labels[sets == "test"])
    seen = set(labels[sets != "test"])
    assert len(test_labels) == 6  # 20 % of 30 labels
    assert not test_labels & seen  # no test label has a training or validation image
    assert set(labels[sets == "val"]) <= set(labels[sets == "train"])
    n_train_labels_images = int((sets != "test").sum())
    assert int((sets == "val").sum()) == math.floor(0.1 * n_train_labels_images + 0.5)
    assert labels[sets == "train"].value_counts().min() >= 2  # a positive pair for every label
    again = label_disjoint_split(labels, 0.2, 0.1, seed=3)
    assert again.equals(sets)
    other = label_disjoint_split(labels, 0.2, 0.1, seed=4)
    assert set(labels[other == "test"]) != test_labels


def test_label_disjoint_split_needs_three_labels():
    with pytest.raises(ValueError, match="at least 3 labels"):
        label_disjoint_split(_labels({"a": 3, "b": 3}), 0.2, 0.1, 0)


def test_stratified_split_counts_per_label():
    labels = _labels({"a": 10, "b": 2, "c": 3, "d": 7})
    sets = stratified_split(labels, val_fraction=0.15, test_fraction=0.15, seed=0)
    table = pd.crosstab(labels, sets)
    # per label: test = val = floor(0.15 n + 0.5), at least one image left to train
    expected = {"a": (6, 2, 2), "b": (2, 0, 0), "c": (3, 0, 0), "d": (5, 1, 1)}
    for label, (train, val, test) in expected.items():
        row = table.loc[label]
        assert (row.get("train", 0), row.get("val", 0), row.get("test", 0)) == (train, val, test)
    tiny = stratified_split(_labels({"a": 2, "b": 2}), 0.5, 0.4, seed=0)
    assert pd.crosstab(_labels({"a": 2, "b": 2}), tiny)["train"].tolist() == [1, 1]


# ----------------------------------------------------------------------------------------------
# samplers


def test_random_triplets_are_valid_and_uniform_over_labels():
    labels = np.array([0, 0, 1, 2, 2, 2])
    rng = np.random.default_rng(0)
    t = random_triplets(labels, 6000, rng)
    a, p, n = t[:, 0], t[:, 1], t[:, 2]
    assert (labels[a] == labels[p]).all() and (a != p).all()
    assert (labels[n] != labels[a]).all()
    assert not (labels[a] == 1).any()  # a label with one image is never an anchor
    # anchor labels 0 and 2 each half the time (not in proportion to their images)
    assert abs((labels[a] == 0).mean() - 0.5) < 0.03
    # for anchor label 0 the negative label is 1 or 2, each half the time
    neg0 = labels[n[labels[a] == 0]]
    assert abs((neg0 == 1).mean() - 0.5) < 0.04
    # within label 2 the three images are equally likely anchors
    counts = np.bincount(a[labels[a] == 2], minlength=6)[3:]
    assert np.abs(counts / counts.sum() - 1 / 3).max() < 0.04
    with pytest.raises(ValueError):
        random_triplets(np.array([0, 1, 2]), 1, rng)


def test_pk_batches_cover_each_label_once_per_epoch():
    labels = np.array([0] * 5 + [1] * 2 + [2] * 4 + [3] * 1 + [4] * 3)
    batches = list(pk_batches(labels, p=2, k=3, rng=np.random.default_rng(1)))
    seen = []
    for batch in batches:
        assert len(set(batch.tolist())) == len(batch)  # no image twice in a batch
        in_batch = labels[batch]
        assert len(set(in_batch)) == 2
        for label in set(in_batch):
            assert (in_batch == label).sum() == min(3, (labels == label).sum())
        seen.extend(sorted(set(in_batch)))
    assert sorted(seen) == [0, 1, 2, 4]  # label 3 (one image) never, the others once


# ----------------------------------------------------------------------------------------------
# losses and mining


def _unit(rows):
    x = torch.tensor(rows, dtype=torch.float32)
    return torch.nn.functional.normalize(x, dim=1)


def test_triplet_and_contrastive_losses_on_hand_made_embeddings():
    from drawmatch.training.losses import make_loss, triplets_to_pairs, tuple_loss

    # triplet 0: d(a,p) = 1 - 0.6 = 0.4, d(a,n) = 1 - 0.8 = 0.2 -> 0.4 - 0.2 + 0.7 = 0.9
    # triplet 1: d(a,p) = 0, d(a,n) = 2 -> max(0, -1.3) = 0 (left out of the non-zero mean)
    emb = _unit([[1, 0], [0.6, 0.8], [0.8, 0.6], [0, 1], [0, 1], [0, -1]])
    triplets = (torch.tensor([0, 3]), torch.tensor([1, 4]), torch.tensor([2, 5]))
    loss = tuple_loss(make_loss("triplet", 0.7), emb, triplets)
    assert loss.item() == pytest.approx(0.9, abs=1e-5)
    # contrastive: positives (0,1) d 0.4 and (3,4) d 0 -> mean over non-zero 0.4;
    # negatives (0,2) d 0.2 -> 0.7 - 0.2 = 0.5 and (3,5) d 2 -> 0: 0.5; sum 0.9
    loss = tuple_loss(make_loss("contrastive", 0.7), emb, triplets_to_pairs(triplets))
    assert loss.item() == pytest.approx(0.9, abs=1e-5)
    # one triplet alone, and one pair of each kind alone (PML's degenerate-tuple case)
    one = (torch.tensor([0]), torch.tensor([1]), torch.tensor([2]))
    assert tuple_loss(make_loss("triplet", 0.7), emb, one).item() == pytest.approx(0.9, abs=1e-5)
    assert tuple_loss(
        make_loss("contrastive", 0.7), emb, triplets_to_pairs(one)
    ).item() == pytest.approx(0.9, abs=1e-5)


def test_label_pairs_and_same_label_mask():
    from drawmatch.training.losses import label_pairs
    from drawmatch.training.mining import same_label_mask

    a1, p, a2, n = label_pairs(torch.tensor([7, 7, 3, 7]))
    assert list(zip(a1.tolist(), p.tolist())) == [(0, 1), (0, 3), (1, 3)]
    assert list(zip(a2.tolist(), n.tolist())) == [(0, 2), (1, 2), (2, 3)]
    mask = same_label_mask(torch.tensor([1, 1, 2]))
    assert mask.tolist() == [[False, True, False], [True, False, False], [False, False, False]]


def test_batch_hard_triplets_pick_the_hardest_positive_and_negative():
    from drawmatch.training.mining import batch_hard_triplets

    # angles: 0, 80 and 40 degrees (label 0), 30 and 100 degrees (label 1), 200 (label 2)
    angles = np.radians([0, 80, 40, 30, 100, 200])
    emb = torch.tensor(np.stack([np.cos(angles), np.sin(angles)], 1), dtype=torch.float32)
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    a, p, n = batch_hard_triplets(emb, labels)
    # anchor 0: positives at 80 and 40 -> 80 (farthest); negatives 30, 100, 200 -> 30 (closest)
    # anchor 1 (80): positives 0, 40 -> 0; negatives 30 (50 deg), 100 (20 deg) -> 100
    # anchor 2 (40): positives 0, 80 (both 40 deg: the lower index, 0); negatives: 30
    # anchor 3 (30): positive 100; negatives 0 (30 deg), 40 (10 deg) -> 40
    # anchor 4 (100): positive 30; negatives: 80 (20 deg) -> 1
    # anchor 5 (label 2) has no positive: no triplet
    assert a.tolist() == [0, 1, 2, 3, 4]
    assert p.tolist() == [1, 0, 0, 4, 3]
    assert n.tolist() == [3, 4, 3, 2, 1]


# ----------------------------------------------------------------------------------------------
# metrics


def test_triplet_accuracy_counts_ties_as_misses():
    from drawmatch.retrieval.metrics import triplet_accuracy

    emb = np.array([[1.0, 0], [0.6, 0.8], [0.8, 0.6], [0, 1.0]])
    # (0,2,1): d_ap 0.2 < d_an 0.4 hit; (0,1,2): miss; (0,1,1): tie, a miss; (0,2,3): hit
    assert triplet_accuracy(emb, np.array([[0, 2, 1], [0, 1, 2], [0, 1, 1], [0, 2, 3]])) == 0.5


def test_roc_auc_by_hand_and_against_scikit_learn():
    from drawmatch.retrieval.metrics import pair_scores, roc_auc

    # positives 0.9, 0.7; negatives 0.8, 0.7: (0.9>0.8) + (0.9>0.7) + (0.7<0.8: 0) + tie 0.5
    assert roc_auc(np.array([0.9, 0.8, 0.7, 0.7]), np.array([1, 0, 1, 0], bool)) == 0.625
    assert roc_auc(np.array([3.0, 1.0]), np.array([True, False])) == 1.0
    with pytest.raises(ValueError):
        roc_auc(np.array([1.0, 2.0]), np.array([True, True]))
    sims, same = pair_scores(np.array([[1.0, 0], [0, 2.0], [1.0, 1.0]]), np.array(["a", "a", "b"]))
    assert same.tolist() == [True, False, False]
    assert sims == pytest.approx([0.0, 1 / math.sqrt(2), 1 / math.sqrt(2)])
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, 300).astype(float)
    positive = rng.random(300) < 0.3
    assert roc_auc(scores, positive) == pytest.approx(sklearn.roc_auc_score(positive, scores))


def test_classification_metrics_by_hand():
    from drawmatch.retrieval.metrics import classification_metrics

    m = classification_metrics(
        np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0]), ["a", "b", "c"]
    )
    assert m["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert m["top1"] == pytest.approx(60.0)
    per = {c["label"]: c for c in m["per_class"]}
    assert (per["a"]["precision"], per["a"]["recall"], per["a"]["f1"]) == pytest.approx(
        (50.0, 50.0, 50.0)
    )
    assert (per["b"]["precision"], per["b"]["recall"], per["b"]["f1"]) == pytest.approx(
        (200 / 3, 100.0, 80.0)
    )
    assert (per["c"]["precision"], per["c"]["recall"], per["c"]["support"]) == (0.0, 0.0, 1)
    assert m["macro_precision"] == pytest.approx((50 + 200 / 3 + 0) / 3)
    assert m["macro_recall"] == pytest.approx(50.0)
    sk = pytest.importorskip("sklearn.metrics")
    y = np.random.default_rng(1).integers(0, 4, 50)
    yp = np.random.default_rng(2).integers(0, 4, 50)
    got = classification_metrics(y, yp, list("wxyz"))
    assert got["macro_f1"] == pytest.approx(100 * sk.f1_score(y, yp, average="macro"))
    assert got["confusion"] == sk.confusion_matrix(y, yp).tolist()


def test_linear_probe_matches_scikit_learn_logistic_regression():
    from drawmatch.jobs.classify import fit_probe

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5))
    y = (x @ rng.normal(size=(5, 3))).argmax(axis=1)
    head = fit_probe(x, y, 3, l2=0.1, max_iter=500)
    with torch.no_grad():
        ours = torch.softmax(head(torch.as_tensor(x, dtype=torch.float32)), dim=1).numpy()
    lm = pytest.importorskip("sklearn.linear_model")
    # sklearn: 0.5 |W|^2 + C * sum CE  ==  n C (mean CE + 1/(2 n C) |W|^2): l2 = 1 / (n C)
    reference = lm.LogisticRegression(C=1 / (60 * 0.1), tol=1e-10, max_iter=5000).fit(x, y)
    assert ours == pytest.approx(reference.predict_proba(x), abs=2e-3)


def test_confusion_figure_is_a_png():
    from drawmatch.reporting.plots import confusion_figure, png

    data = png(confusion_figure(np.array([[3, 1], [0, 2]]), ["cubism", "baroque"], "test"))
    assert data[:8] == b"\x89PNG\r\n\x1a\n"


def test_label_images_cache_stops_at_its_budget(tmp_path):
    from drawmatch.training.labels import LabelImages

    paths = [str(make_image(tmp_path / f"{i}.jpg", seed=i)) for i in range(3)]
    images = LabelImages(paths, 32, 36, 32, cache_bytes=2 * 32 * 32 * 3)
    first = images.eval_batch([0, 1, 2])
    assert sorted(images.cache) == [0, 1]  # the third would exceed the budget
    assert torch.equal(images.eval_batch([0, 1, 2]), first)
    assert images.train_batch([2]).shape == (1, 3, 32, 32)
