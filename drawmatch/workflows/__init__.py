"""Jobs that run other jobs: the demo (ingest -> augment -> embed -> index -> evaluate on the
bundled data) and the sweep (Ray Tune over train runs and folds). The one orchestration layer."""
