"""How jobs reach Ray: joining or starting a cluster with the resources a job needs, and the
shared Ray Data pipeline (catalogue rows -> decode tasks -> model actors -> Parquet parts) that the
embed and regions jobs run."""
