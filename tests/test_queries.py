"""What every search mode asks and shows, written once: the query checks, the `where=` filter and
the artist and title columns (`drawmatch.retrieval.queries`)."""

from __future__ import annotations

import pandas as pd
import pytest

from drawmatch.retrieval.queries import (
    add_artwork_columns,
    allowed_artworks,
    check_query,
    image_query,
)


def _catalogue() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": ["draw0", "art0", "art1", "art2"],
            "collection": ["drawing", "artwork", "artwork", "artwork"],
            "artist": [None, "Monet", "Klimt", "Monet"],
            "title": [None, "Water lilies", "The kiss", "Poppies"],
        }
    )


def test_a_missing_query_and_a_file_named_as_a_verso_are_refused():
    with pytest.raises(ValueError, match="search needs query="):
        check_query(None)
    with pytest.raises(ValueError, match="the name states a verso"):
        check_query("scans/FR_2010_V_abc.jpg")
    check_query("draw0")


def test_where_keeps_the_matching_artworks_and_refuses_unknown_columns():
    catalogue = _catalogue()
    assert allowed_artworks(catalogue, {}) is None
    assert allowed_artworks(catalogue, {"artist": "Monet"}) == ["art0", "art2"]
    with pytest.raises(ValueError, match="cannot filter on 'school'"):
        allowed_artworks(catalogue, {"school": "x"})


def test_artist_and_title_columns_follow_the_catalogue():
    frame = pd.DataFrame({"rank": [1, 2], "artwork_id": ["art2", "art1"]})
    shown = add_artwork_columns(frame.copy(), _catalogue())
    assert shown["artist"].tolist() == ["Monet", "Klimt"]
    assert shown["title"].tolist() == ["Poppies", "The kiss"]
    bare = _catalogue().drop(columns=["title"])
    assert "title" not in add_artwork_columns(frame.copy(), bare).columns
    kept = add_artwork_columns(frame.copy(), bare, keep_missing=True)
    assert kept.columns.tolist() == ["rank", "artwork_id", "artist", "title"]
    assert kept["title"].isna().all()


def test_an_uploaded_image_is_embedded_at_the_model_s_size():
    import numpy as np
    from PIL import Image

    class Embedder:
        image_size = 8

        def embed_images(self, batch: np.ndarray) -> np.ndarray:
            assert batch.shape == (1, 8, 8, 3) and batch.dtype == np.uint8
            return np.ones((1, 4), np.float32)

    query = image_query(Embedder(), Image.new("RGB", (30, 20)))
    assert query.name == "upload" and query.file is None and query.vector.shape == (1, 4)
