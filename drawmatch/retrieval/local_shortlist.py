"""A shortlist of artworks for verification from their local features alone: an inverted file of
visual words (Sivic & Zisserman 2003, "Video Google"; Philbin et al. 2007), as image search
engines with spatial verification use before RANSAC.

- Vocabulary: k-means (FAISS) of the artworks' RootSIFT descriptors (`root_sift`; a seeded sample
  of at most `train_size`) into `words` centroids; each descriptor becomes its nearest word.
- Weights: an image's vector holds, per word, `sqrt(count) * idf` with `idf = log(1 + N / df)` (N
  artworks, df of them holding the word); the square root damps burstiness (a word repeated by a
  texture or a grid counts less than the same number of distinct words; Jegou et al. 2009). Vectors
  are L2-normalised; a query's score for an artwork is the dot product of their vectors (cosine of
  tf-idf), summed through an inverted file (per word, the artworks holding it and their weights),
  i.e. only over the artworks that share a word with the query.

A detail copied from an artwork shares words with that artwork wherever its keypoints survived
(recolouring and rotation keep SIFT; heavy paint effects do not), whatever the artwork's size in
the gallery, so the shortlist holds the source where the global and region embeddings of a small
detail no longer do. Memory: the vocabulary (words x 128 float32) plus one posting (artwork int32, weight
float32) per distinct word of each artwork.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drawmatch.core import storage
from drawmatch.models.local_features import Features, root_sift

WORDS_FILE = "words-{words}-{fingerprint}.npz"


def idf_weights(doc_freq: np.ndarray, n_docs: int) -> np.ndarray:
    """log(1 + N / df) per word, 0 for a word no artwork holds (smoothed: a word that every
    artwork holds still counts, log 2, so a gallery of a few artworks is not all zeros)."""
    df = np.asarray(doc_freq, dtype=np.float64)
    return np.where(df > 0, np.log1p(n_docs / np.maximum(df, 1.0)), 0.0).astype(np.float32)


def tfidf_vector(words: np.ndarray, idf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One image's sparse vector: its distinct words (sorted) and their weights
    `sqrt(count) * idf`, L2-normalised (no words, or only words of idf 0: all zeros)."""
    found, count = np.unique(np.asarray(words, dtype=np.int64), return_counts=True)
    weights = np.sqrt(count.astype(np.float32)) * idf[found].astype(np.float32)
    norm = float(np.sqrt(np.sum(weights.astype(np.float64) ** 2)))
    return found, (weights / norm if norm > 0 else weights).astype(np.float32)


def inverted_file(
    vectors: list[tuple[np.ndarray, np.ndarray]], n_words: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Postings of the images' sparse vectors by word: `start` (n_words + 1: word w's postings
    are `start[w]:start[w + 1]`), `image` (int32) and `weight` (float32) of each posting."""
    words = np.concatenate([w for w, _v in vectors] + [np.zeros(0, np.int64)])
    weights = np.concatenate([v for _w, v in vectors] + [np.zeros(0, np.float32)])
    images = np.concatenate(
        [np.full(len(w), i, np.int32) for i, (w, _v) in enumerate(vectors)]
        + [np.zeros(0, np.int32)]
    )
    order = np.argsort(words, kind="stable")
    start = np.searchsorted(words[order], np.arange(n_words + 1)).astype(np.int64)
    return start, images[order].astype(np.int32), weights[order].astype(np.float32)


def features_fingerprint(ids: list[str], features: dict[str, Features]) -> str:
    """A hash of the gallery's ids and their descriptors: a word index is reused only for the
    same artworks with the same features."""
    digest = hashlib.blake2b(digest_size=8)
    for a in ids:
        digest.update(a.encode() + b"\0")
        f = features.get(a)
        if f is not None:
            digest.update(np.ascontiguousarray(f.descriptors).tobytes())
    return digest.hexdigest()


@dataclass
class WordIndex:
    """Visual words of a gallery: the vocabulary (words x 128 float32, RootSIFT space), the idf
    of each word and the inverted file of the artworks' tf-idf vectors (`inverted_file`;
    images are positions in `ids`)."""

    ids: list[str]
    centroids: np.ndarray
    idf: np.ndarray
    start: np.ndarray
    image: np.ndarray
    weight: np.ndarray

    def assign(self, descriptors: np.ndarray) -> np.ndarray:
        """The nearest word of each SIFT descriptor (as RootSIFT)."""
        import faiss

        if len(descriptors) == 0:
            return np.zeros(0, np.int64)
        index = faiss.IndexFlatL2(self.centroids.shape[1])
        index.add(self.centroids)
        _d, words = index.search(np.ascontiguousarray(root_sift(descriptors)), 1)
        return words[:, 0].astype(np.int64)

    def scores(self, query: Features) -> np.ndarray:
        """Cosine of the query's tf-idf vector with every artwork's (N,) float32, summed over
        the postings of the query's words only."""
        words, weights = tfidf_vector(self.assign(query.descriptors), self.idf)
        first, last = self.start[words], self.start[words + 1]
        lengths = last - first
        # every posting of every query word: word i's postings are first[i] .. last[i] - 1
        offsets = np.repeat(first - np.cumsum(lengths) + lengths, lengths)
        postings = offsets + np.arange(int(lengths.sum()))
        contrib = self.weight[postings] * np.repeat(weights, lengths)
        return np.bincount(self.image[postings], weights=contrib, minlength=len(self.ids)).astype(
            np.float32
        )

    def shortlist(self, query: Features, top: int) -> np.ndarray:
        """Positions (in `ids`) of the `top` best artworks for the query, best first (ties by
        position); artworks sharing no word with the query come last."""
        s = self.scores(query)
        return np.argsort(-s, kind="stable")[:top]

    def nbytes(self) -> int:
        """Bytes held: vocabulary, idf and the inverted file."""
        return int(
            self.centroids.nbytes
            + self.idf.nbytes
            + self.start.nbytes
            + self.image.nbytes
            + self.weight.nbytes
        )


def build_word_index(
    ids: list[str],
    features: dict[str, Features],
    words: int = 4096,
    train_size: int = 200_000,
    seed: int = 0,
    iterations: int = 20,
) -> WordIndex:
    """The word index of the artworks `ids` (their SIFT features; a missing one has no words).
    `words` is lowered to the number of training descriptors when there are fewer."""
    import faiss

    descs = [
        features[a].descriptors if a in features else np.zeros((0, 128), np.uint8) for a in ids
    ]
    every = np.concatenate(descs) if descs else np.zeros((0, 128), np.uint8)
    if len(every) == 0:
        raise ValueError("no local features in the gallery: nothing to build visual words from")
    rng = np.random.default_rng(seed)
    sample = every if len(every) <= train_size else every[rng.choice(len(every), train_size, False)]
    k = min(words, len(sample))
    kmeans = faiss.Kmeans(128, k, niter=iterations, seed=seed, verbose=False)
    kmeans.train(np.ascontiguousarray(root_sift(sample)))
    centroids = np.ascontiguousarray(kmeans.centroids, dtype=np.float32)
    empty = np.zeros(0, np.int32)
    index = WordIndex(list(ids), centroids, np.ones(k, np.float32), empty, empty, empty)
    assigned = [index.assign(d) for d in descs]
    doc_freq = np.zeros(k, np.int64)
    for found in assigned:
        doc_freq[np.unique(found)] += 1
    index.idf = idf_weights(doc_freq, len(ids))
    vectors = [tfidf_vector(a, index.idf) for a in assigned]
    index.start, index.image, index.weight = inverted_file(vectors, k)
    return index


def save_word_index(index: WordIndex, path: str) -> None:
    """Write the index as one .npz file (any storage path)."""
    buffer = io.BytesIO()
    np.savez(
        buffer,
        ids=np.array(index.ids),
        centroids=index.centroids,
        idf=index.idf,
        start=index.start,
        image=index.image,
        weight=index.weight,
    )
    storage.write_bytes(path, buffer.getvalue())


def load_word_index(path: str) -> WordIndex:
    """Read an index written by `save_word_index`."""
    data = np.load(io.BytesIO(storage.read_bytes(path)), allow_pickle=False)
    ids = [str(a) for a in data["ids"]]
    return WordIndex(
        ids, data["centroids"], data["idf"], data["start"], data["image"], data["weight"]
    )


def word_index_for(
    directory: str | Path, ids: list[str], features: dict[str, Features], words: int
) -> WordIndex:
    """The word index of these artworks and features, read from `directory` when one was built
    for exactly them (same ids and descriptors), else built and saved there."""
    name = WORDS_FILE.format(words=words, fingerprint=features_fingerprint(ids, features))
    path = storage.join(directory, name)
    if storage.exists(path):
        return load_word_index(path)
    index = build_word_index(ids, features, words)
    save_word_index(index, path)
    return index
