"""The pipeline: one streaming query (``pipelines.job``) whose micro-batch (``pipelines.batch``)
writes bronze, silver and gold (one folder each) and PostgreSQL (``pipelines.serve``)."""
