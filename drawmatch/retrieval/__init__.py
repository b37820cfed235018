"""Ranking artworks for a drawing: the FAISS artwork and region indexes, global, region,
fused and verified ranking, and the retrieval metrics (Mean Position, Minimum Mean Position,
Recall@k, MAP)."""
