"""Manifest backends: where the rows live (a JSON-lines log, lash's
PostgreSQL table, lash's SQLite session databases).

Each implements ``lashctl.backends.base.ManifestBackend``."""
