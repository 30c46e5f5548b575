"""Storage backends, chosen by the form of ``--store`` and ``--manifest``.

A plain path is the local file system (blobs) or a JSON-lines log (manifest);
``s3://BUCKET/PREFIX`` is an S3-compatible object store; ``postgresql://…``
(or ``postgres://…``) is lash's PostgreSQL manifest table. The modules of the
remote backends, and the libraries they need, are imported only when a URL
names them: local commands start as fast as before.
"""

from __future__ import annotations

from lashctl.errors import UsageError

S3_SCHEMES = ("s3://",)
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_s3_url(text: str) -> bool:
    return text.startswith(S3_SCHEMES)


def is_postgres_url(text: str) -> bool:
    return text.startswith(POSTGRES_SCHEMES)


def is_url(text: str) -> bool:
    """Anything with a scheme: local paths never have one (``./s3:`` does not count)."""
    head, sep, _ = text.partition("://")
    return bool(sep) and head.isalnum()


def require_extra(module: str, extra: str, what: str) -> None:
    """One line naming what to install when an optional library is missing."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise UsageError(f"{what} needs the '{extra}' extra: pip install 'lashctl[{extra}]'")


def strip_password(url: str) -> str:
    """A URL as it may be shown: any password (in the user part or a
    ``password=`` parameter) removed."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    if not is_url(url):
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}@{host}"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "password"],
                      safe="/")
    shown = urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    if not netloc:  # postgresql:///db keeps its empty host (urlunsplit would drop the "//")
        shown = shown.replace(f"{parts.scheme}:", f"{parts.scheme}://", 1)
    return shown


MANIFEST_NAME = "manifest.jsonl"  # a local store's manifest, in its root


def open_blobs(location):
    """The blob backend for a directory or an ``s3://`` URL."""
    text = str(location)
    if is_s3_url(text):
        require_extra("obstore", "s3", "an s3:// store")
        from lashctl.backends.s3 import S3Blobs

        return S3Blobs(text)
    from pathlib import Path

    from lashctl.backends.localfs import BlobStore

    return BlobStore(Path(location))


def open_manifest(location, blobs, *, lock_timeout: float = 30.0, warn=None, note=None):
    """The manifest backend for a file or a ``postgresql://`` URL; None means
    ``manifest.jsonl`` in a local store's root."""
    from pathlib import Path

    text = str(location) if location is not None else None
    if text is not None and is_postgres_url(text):
        require_extra("psycopg", "postgres", "a postgresql:// manifest")
        from lashctl.backends.postgres import PostgresManifest

        return PostgresManifest(text, lock_timeout=lock_timeout)
    if text is None:
        if is_s3_url(blobs.name):
            raise UsageError("an s3:// store keeps no manifest of its own: name one with --manifest "
                             "(a file or a postgresql:// URL)")
        # The manifest lives in the root: a symlinked or foreign root stops
        # the manifest commands too, not only those that touch blobs.
        blobs.check_root()
    from lashctl.backends.jsonl import JsonlManifest

    path = Path(text) if text is not None else Path(blobs.name) / MANIFEST_NAME
    return JsonlManifest(path, lock_timeout=lock_timeout, warn=warn, note=note)
