"""The bottom layer: storage (local paths and URIs, atomic writes), file locks for one writer
per output folder, safe image decoding (bombs, EXIF rotation, CMYK, 16-bit), and the config loader
(typed keys, ranges, YAML files and `key=value` overrides). It imports nothing else of drawmatch."""
