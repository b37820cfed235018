"""The data contracts and their stores: the catalogue (one row per image), IMAJ file names,
drawing-artwork pairs, the embeddings store (`embeddings/<model_tag>/part-*.parquet`), drawing
neighbours, the annotations database of the workbench and the view-size renditions of images.
Tables in, tables out: no models and no Ray here."""
