"""The JSON-lines manifest: the log, its state cache, the cache directory
and the fast decoder."""
