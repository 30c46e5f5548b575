"""Blob backends: where the bytes live (a local directory, an S3 bucket).

Each implements ``lashctl.backends.base.BlobBackend``."""
