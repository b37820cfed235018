"""drawmatch: find the famous artworks that children's drawings recreate."""

__version__ = "0.1.0"
