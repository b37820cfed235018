"""A shortlist of artworks for verification from their local features alone: an inverted file of
visual words with Hamming embedding (Sivic & Zisserman 2003, "Video Google"; Jegou, Douze &
Schmid 2008, "Hamming embedding and weak geometric consistency"), as image search engines with
spatial verification use before RANSAC.

- Vocabulary: k-means (FAISS) of the artworks' RootSIFT descriptors (`root_sift`; a seeded sample
  of at most `train_size`) into `words` centroids; each descriptor becomes its nearest word.
- Signature: each descriptor also gets `bits` (64) bits: its RootSIFT projected on `bits` rows of
  a seeded random rotation, each bit set where the projection exceeds the median of that
  projection over the training descriptors of the same word. Two descriptors of one word whose
  signatures differ in few bits are close within the word; a word alone cannot tell them apart.
- Score of an artwork for a query: the sum, over every pair (query descriptor, artwork
  descriptor) of the same word whose signatures differ in at most `HAMMING_THRESHOLD` (24) bits,
  of `idf(word)^2 * exp(-h^2 / HAMMING_SIGMA^2)` (h: the bits that differ; `idf = log(1 + N /
  df)`, N artworks, df of them holding the word), divided by the artwork's norm `sqrt(sum over
  its descriptors of idf(word)^2)` so that an artwork with many keypoints does not win by number.
  Summed through an inverted file (per word, the artwork and signature of every descriptor),
  i.e. only over the descriptors that share a word with the query's.

A detail copied from an artwork shares words with that artwork wherever its keypoints survived
(recolouring and rotation keep SIFT; heavy paint effects do not), whatever the artwork's size in
the gallery, so the shortlist holds the source where the global and region embeddings of a small
detail no longer do. On a large gallery every word of a small vocabulary is common; the signatures
keep a detail's matches apart from the crowd (`BENCHMARKS.md`, "Which artworks to verify").
Memory: the vocabulary and the medians (words x (128 + bits) float32) plus one posting (artwork
int32, signature uint64: 12 bytes) per descriptor of each artwork.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drawmatch.core import storage
from drawmatch.models.local_features import Features, root_sift

WORDS_FILE = "words-he{bits}-{words}-{fingerprint}.npz"
BITS = 64  # signature length (at most 64: one uint64)
HAMMING_THRESHOLD = 24  # most bits two matching signatures may differ in (Jegou et al. 2008)
HAMMING_SIGMA = 16.0  # width of the weight exp(-h^2 / sigma^2) of a match h bits apart


def idf_weights(doc_freq: np.ndarray, n_docs: int) -> np.ndarray:
    """log(1 + N / df) per word, 0 for a word no artwork holds (smoothed: a word that every
    artwork holds still counts, log 2, so a gallery of a few artworks is not all zeros)."""
    df = np.asarray(doc_freq, dtype=np.float64)
    return np.where(df > 0, np.log1p(n_docs / np.maximum(df, 1.0)), 0.0).astype(np.float32)


def hamming_weight(bits_apart: np.ndarray) -> np.ndarray:
    """The weight of a match whose signatures differ in `bits_apart` bits: exp(-h^2 / sigma^2)
    up to `HAMMING_THRESHOLD`, 0 beyond."""
    h = np.asarray(bits_apart, dtype=np.float64)
    return np.where(h <= HAMMING_THRESHOLD, np.exp(-(h**2) / HAMMING_SIGMA**2), 0.0)


def pack_bits(above: np.ndarray) -> np.ndarray:
    """Rows of booleans (n, bits <= 64) as one uint64 each, column b as bit b."""
    flags = np.asarray(above, dtype=np.uint64)
    return (flags << np.arange(flags.shape[1], dtype=np.uint64)).sum(axis=1, dtype=np.uint64)


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
    """Visual words with Hamming embedding of a gallery: the vocabulary (words x 128 float32,
    RootSIFT space), the idf of each word, the signatures' projection (bits x 128) and medians
    (words x bits), and the inverted file: word w's postings are `start[w]:start[w + 1]` of
    `image` (positions in `ids`, int32) and `signature` (uint64); `norm` (one per artwork)."""

    ids: list[str]
    centroids: np.ndarray
    idf: np.ndarray
    projection: np.ndarray
    medians: np.ndarray
    start: np.ndarray
    image: np.ndarray
    signature: np.ndarray
    norm: np.ndarray

    def assign(self, descriptors: np.ndarray) -> np.ndarray:
        """The nearest word of each SIFT descriptor (as RootSIFT)."""
        return self.encode(descriptors)[0]

    def encode(self, descriptors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each SIFT descriptor's nearest word (int64) and signature (uint64)."""
        import faiss

        if len(descriptors) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.uint64)
        rs = np.ascontiguousarray(root_sift(descriptors))
        index = faiss.IndexFlatL2(self.centroids.shape[1])
        index.add(self.centroids)
        words = index.search(rs, 1)[1][:, 0].astype(np.int64)
        return words, pack_bits(rs @ self.projection.T > self.medians[words])

    def scores(self, query: Features) -> np.ndarray:
        """Every artwork's score (N,) float32 for the query (module docstring), summed over the
        postings of the query's words only."""
        words, signatures = self.encode(query.descriptors)
        first, last = self.start[words], self.start[words + 1]
        lengths = last - first
        # every posting of every query descriptor: descriptor i's are first[i] .. last[i] - 1
        offsets = np.repeat(first - np.cumsum(lengths) + lengths, lengths)
        postings = offsets + np.arange(int(lengths.sum()))
        apart = np.bitwise_count(self.signature[postings] ^ np.repeat(signatures, lengths))
        close = apart <= HAMMING_THRESHOLD
        idf2 = np.repeat(self.idf[words].astype(np.float64) ** 2, lengths)[close]
        total = np.bincount(
            self.image[postings[close]],
            weights=idf2 * hamming_weight(apart[close]),
            minlength=len(self.ids),
        )
        return (total / self.norm).astype(np.float32)

    def shortlist(self, query: Features, top: int) -> np.ndarray:
        """Positions (in `ids`) of the `top` best artworks for the query, best first (ties by
        position); artworks sharing no close match with the query come last."""
        s = self.scores(query)
        return np.argsort(-s, kind="stable")[:top]

    def nbytes(self) -> int:
        """Bytes held: vocabulary, idf, projection, medians and the inverted file."""
        arrays = (self.centroids, self.idf, self.projection, self.medians, self.start)
        return int(
            sum(a.nbytes for a in arrays)
            + self.image.nbytes
            + self.signature.nbytes
            + self.norm.nbytes
        )


def word_medians(projected: np.ndarray, words: np.ndarray, n_words: int) -> np.ndarray:
    """The median of each projection (column of `projected`) over the descriptors of each word
    (n_words x bits float32; 0 for a word without descriptors)."""
    medians = np.zeros((n_words, projected.shape[1]), np.float32)
    order = np.argsort(words, kind="stable")
    bounds = np.searchsorted(words[order], np.arange(n_words + 1))
    for w in np.flatnonzero(np.diff(bounds)):
        medians[w] = np.median(projected[order[bounds[w] : bounds[w + 1]]], axis=0)
    return medians


def postings(
    encoded: list[tuple[np.ndarray, np.ndarray]], idf: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The inverted file of the artworks' encoded descriptors (words, signatures), sorted by word
    and, within a word, by artwork: `start` (n_words + 1), `image`, `signature`, and each
    artwork's `norm` (sqrt of the sum of idf(word)^2 over its descriptors; 1 without any)."""
    words = np.concatenate([w for w, _s in encoded] + [np.zeros(0, np.int64)])
    sigs = np.concatenate([s for _w, s in encoded] + [np.zeros(0, np.uint64)])
    images = np.concatenate(
        [np.full(len(w), i, np.int32) for i, (w, _s) in enumerate(encoded)]
        + [np.zeros(0, np.int32)]
    )
    order = np.argsort(words, kind="stable")
    start = np.searchsorted(words[order], np.arange(len(idf) + 1)).astype(np.int64)
    squares = np.bincount(
        images, weights=idf[words].astype(np.float64) ** 2, minlength=len(encoded)
    )
    norm = np.where(squares > 0, np.sqrt(squares), 1.0)
    return start, images[order].astype(np.int32), sigs[order].astype(np.uint64), norm


def build_word_index(
    ids: list[str],
    features: dict[str, Features],
    words: int = 4096,
    train_size: int = 100_000,
    seed: int = 0,
    iterations: int = 20,
    bits: int = BITS,
) -> WordIndex:
    """The word index of the artworks `ids` (their SIFT features; a missing one has no words).
    `words` is lowered to the number of training descriptors when there are fewer."""
    import faiss

    if not 1 <= bits <= 64:
        raise ValueError(f"bits must be 1 to 64, got {bits}")
    descs = [
        features[a].descriptors if a in features else np.zeros((0, 128), np.uint8) for a in ids
    ]
    every = np.concatenate(descs) if descs else np.zeros((0, 128), np.uint8)
    if len(every) == 0:
        raise ValueError("no local features in the gallery: nothing to build visual words from")
    rng = np.random.default_rng(seed)
    sample = every if len(every) <= train_size else every[rng.choice(len(every), train_size, False)]
    k = min(words, len(sample))
    rs = np.ascontiguousarray(root_sift(sample))
    kmeans = faiss.Kmeans(128, k, niter=iterations, seed=seed, verbose=False)
    kmeans.train(rs)
    rotation = np.linalg.qr(rng.standard_normal((128, 128)))[0]
    empty = np.zeros(0, np.int32)
    index = WordIndex(
        ids=list(ids),
        centroids=np.ascontiguousarray(kmeans.centroids, dtype=np.float32),
        idf=np.ones(k, np.float32),
        projection=np.ascontiguousarray(rotation[:bits], dtype=np.float32),
        medians=np.zeros((k, bits), np.float32),
        start=np.zeros(k + 1, np.int64),
        image=empty,
        signature=np.zeros(0, np.uint64),
        norm=np.ones(len(ids)),
    )
    index.medians = word_medians(rs @ index.projection.T, index.assign(sample), k)
    encoded = [index.encode(d) for d in descs]
    doc_freq = np.zeros(k, np.int64)
    for found, _s in encoded:
        doc_freq[np.unique(found)] += 1
    index.idf = idf_weights(doc_freq, len(ids))
    index.start, index.image, index.signature, index.norm = postings(encoded, index.idf)
    return index


def save_word_index(index: WordIndex, path: str) -> None:
    """Write the index as one .npz file (any storage path)."""
    buffer = io.BytesIO()
    np.savez(
        buffer,
        ids=np.array(index.ids),
        centroids=index.centroids,
        idf=index.idf,
        projection=index.projection,
        medians=index.medians,
        start=index.start,
        image=index.image,
        signature=index.signature,
        norm=index.norm,
    )
    storage.write_bytes(path, buffer.getvalue())


def load_word_index(path: str) -> WordIndex:
    """Read an index written by `save_word_index`."""
    data = np.load(io.BytesIO(storage.read_bytes(path)), allow_pickle=False)
    return WordIndex(
        [str(a) for a in data["ids"]],
        data["centroids"],
        data["idf"],
        data["projection"],
        data["medians"],
        data["start"],
        data["image"],
        data["signature"],
        data["norm"],
    )


def word_index_for(
    directory: str | Path, ids: list[str], features: dict[str, Features], words: int
) -> WordIndex:
    """The word index of these artworks and features, read from `directory` when one was built
    for exactly them (same ids and descriptors), else built and saved there."""
    fingerprint = features_fingerprint(ids, features)
    name = WORDS_FILE.format(bits=BITS, words=words, fingerprint=fingerprint)
    path = storage.join(directory, name)
    if storage.exists(path):
        return load_word_index(path)
    index = build_word_index(ids, features, words)
    save_word_index(index, path)
    return index
