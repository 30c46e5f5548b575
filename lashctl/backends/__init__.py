"""Storage backends, chosen by the form of ``--store`` and ``--manifest``.

A plain path is the local file system (blobs) or a JSON-lines log (manifest);
``s3://BUCKET/PREFIX`` is an S3-compatible object store; ``postgresql://…``
(or ``postgres://…``) is lash's PostgreSQL manifest table; ``lash-sqlite:DIR``
is the directory of lash's SQLite session databases. The modules of the
remote backends, and the libraries they need, are imported only when a URL
names them: local commands start as fast as before.
"""

from __future__ import annotations

from lashctl.errors import UsageError

S3_SCHEMES = ("s3://",)
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
LASH_SQLITE_PREFIX = "lash-sqlite:"  # lash-sqlite:/path/to/sessions


def is_s3_url(text: str) -> bool:
    return text.startswith(S3_SCHEMES)


def is_postgres_url(text: str) -> bool:
    return text.startswith(POSTGRES_SCHEMES)


def is_lash_sqlite(text: str) -> bool:
    return text.startswith(LASH_SQLITE_PREFIX)


def is_url(text: str) -> bool:
    """Anything with a scheme (RFC 3986: a letter, then letters, digits, ``+``,
    ``-`` or ``.``): local paths never have one (``./s3:`` does not count)."""
    head, sep, _ = text.partition("://")
    return bool(sep) and head[:1].isalpha() and head.isascii() and head.translate(_SCHEME_MARKS).isalnum()


_SCHEME_MARKS = str.maketrans("", "", "+-.")


def unknown_scheme(text: str, option: str, expected: str) -> UsageError:
    """The refusal of a URL of a scheme lashctl does not speak: only the
    scheme is shown (the rest may hold a password)."""
    return UsageError(f"{option}: unknown URL scheme '{text.partition('://')[0]}://' (expected {expected})")


def require_extra(module: str, extra: str, what: str) -> None:
    """One line naming what to install when an optional library is missing."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise UsageError(
            f"{what} needs the '{extra}' extra: pip install 'lashctl[{extra}]' "
            f"(in a clone of the repository: pip install '.[{extra}]')"
        )


def strip_password(url: str) -> str:
    """A URL as it may be shown: any password (in the user part or a
    ``password=`` parameter) removed. Never fails, whatever the text. Read
    as libpq reads it: the user part ends at the last "@" before the first
    "/" ("?" and "#" may be in a password), a parameter's value at the next
    "&"; where unsure, more is hidden, never less."""
    import re
    from urllib.parse import unquote

    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, tail = rest.partition("/")
    if "@" not in authority and ":" in authority and "@" in tail:
        authority, slash, tail = rest.rpartition("@")[0], "", "@" + rest.rpartition("@")[2]  # a "/" in a password
        authority = authority.partition(":")[0]
    else:
        userinfo, at_sign, hosts = authority.rpartition("@")
        if at_sign:
            authority = userinfo.partition(":")[0] + "@" + hosts

    def kept(match: re.Match) -> str:  # a parameter, dropped if its key (percent-decoded) is password
        return "" if unquote(match.group(1)).lower() == "password" else match.group(0)

    shown = re.sub(r"(?<=[?&])([^=&]*)=[^&]*(?:&|$)", kept, f"{scheme}{sep}{authority}{slash}{tail}")
    return shown[:-1] if shown.endswith(("?", "&")) else shown


MANIFEST_NAME = "manifest.jsonl"  # a local store's manifest, in its root

# --process-registry (README, "Beyond one machine"): where lash's process
# registry lives. ``table`` is lash's own table in the manifest's database;
# a value with a "/" is lash's SQLite process registry file (lash-sqlite: manifests).
PROCESS_REGISTRY_TABLE = "lash_processes"
PROCESS_REGISTRY_FORMS = (
    "table or table:[SCHEMA.]NAME (a table of the PostgreSQL manifest's database), "
    "a PATH with a '/' (lash's SQLite process registry file), or none"
)
_REGISTRY_NAME = r"[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?"


def is_registry_table(name: str) -> bool:
    """A ``[SCHEMA.]NAME`` of plain identifiers (compiled only when a registry is named)."""
    import re

    return re.fullmatch(_REGISTRY_NAME, name) is not None


def process_registry(value: str | None) -> str | None:
    """The table ``--process-registry`` names (``table`` is ``lash_processes``),
    a file path (any value with a "/": lash's SQLite process registry), or
    None (``none``, or not given): lash's process-owner rule is not applied
    and process-owned intents are kept, as an unwired lash keeps them.
    UsageError for any other value."""
    if value is None or value == "none":
        return None
    if "/" in value:
        return value
    if value == "table":
        return PROCESS_REGISTRY_TABLE
    kind, _, name = value.partition(":")
    if kind != "table" or not is_registry_table(name):
        raise UsageError(
            f"--process-registry '{value}' is not a process registry lashctl can read: give {PROCESS_REGISTRY_FORMS}"
        )
    return name


def open_blobs(location):
    """The blob backend for a directory or an ``s3://`` URL."""
    text = str(location)
    if is_s3_url(text):
        require_extra("obstore", "s3", "an s3:// store")
        from lashctl.backends.blobs.s3 import S3Blobs

        return S3Blobs(text)
    if is_url(text):
        raise unknown_scheme(text, "--store", "s3://BUCKET/PREFIX or a directory")
    from pathlib import Path

    from lashctl.backends.blobs.localfs import BlobStore

    return BlobStore(Path(location))


def open_manifest(
    location, blobs, *, lock_timeout: float = 30.0, warn=None, note=None, process_registry: str | None = None
):
    """The manifest backend for a file, a ``postgresql://`` URL or a
    ``lash-sqlite:DIR``; None means ``manifest.jsonl`` in a local store's
    root. ``process_registry`` is what ``process_registry()`` returned: a
    table for a PostgreSQL manifest, a file path for lash-sqlite."""
    from pathlib import Path

    text = str(location) if location is not None else None
    if text is not None and is_lash_sqlite(text):
        if process_registry is not None and "/" not in process_registry:
            raise UsageError(
                f"--process-registry names a table of a PostgreSQL database; {text} is lash's SQLite "
                "session databases: give the path of lash's SQLite process registry file"
            )
        from lashctl.backends.manifests.lash_sqlite import LashSqliteManifest

        return LashSqliteManifest(text, lock_timeout=lock_timeout, process_registry=process_registry, warn=warn)
    if process_registry is not None and "/" in process_registry:
        raise UsageError(
            f"--process-registry {process_registry} is a file, lash's SQLite process registry: "
            f"it goes with a {LASH_SQLITE_PREFIX}DIR manifest only"
        )
    if text is not None and is_postgres_url(text):
        if text.partition("://")[2].partition("?")[0].count("@") > 1:
            # libpq and lashctl would split it differently: part of the password could show.
            raise UsageError(
                "--manifest: the URL holds more than one '@' before its parameters: percent-encode "
                "an '@' in a user name or password as %40 (the URL is not shown: it may hold a password)"
            )
        require_extra("psycopg", "postgres", "a postgresql:// manifest")
        from lashctl.backends.manifests.postgres import PostgresManifest

        return PostgresManifest(text, lock_timeout=lock_timeout, process_registry=process_registry, warn=warn)
    if text is not None and is_url(text):
        raise unknown_scheme(text, "--manifest", f"a postgresql:// URL, {LASH_SQLITE_PREFIX}DIR or a file path")
    if process_registry is not None:
        # A JSON-lines manifest has no owners: a registry named for it is a mistaken line.
        where = text if text is not None else f"{blobs.name}/{MANIFEST_NAME}"
        raise UsageError(
            f"--process-registry names lash's process registry for a PostgreSQL manifest; "
            f"{where} is a JSON-lines file, whose rows have no process owners"
        )
    if text is None:
        if is_s3_url(blobs.name):
            raise UsageError(
                "an s3:// store keeps no manifest of its own: name one with --manifest (a file or a postgresql:// URL)"
            )
        # The manifest lives in the root: a symlinked or foreign root stops
        # the manifest commands too, not only those that touch blobs.
        blobs.check_root()
    from lashctl.backends.manifests.jsonl.manifest import JsonlManifest

    path = Path(text) if text is not None else Path(blobs.name) / MANIFEST_NAME
    return JsonlManifest(path, lock_timeout=lock_timeout, warn=warn, note=note)


# -- what is a store (README, "What is a store") -------------------------------------
OBJECTS_DIR = "sha256"  # a local store's blobs, in its root
ABSENT = "absent"
EMPTY = "empty"


def not_a_store(location, manifest=None) -> str | None:
    """Why a local store root holds no store, or None when it holds one.

    A local store is a directory holding ``sha256/`` or its JSON-lines
    manifest: ``manifest.jsonl``, or the file ``manifest`` names when that
    lies in the root itself (a manifest kept elsewhere does not make a
    directory a store). ``ABSENT``: nothing at the path; ``EMPTY``: a
    directory holding neither; otherwise what is there instead of a
    directory ("a regular file", "a FIFO"). Not judged (None): an ``s3://``
    prefix (any prefix of a bucket that exists), and a root that is a
    symlink or cannot be searched, which opening the store refuses itself.
    """
    import os
    import stat

    root = str(location)
    if is_url(root):
        return None
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        return ABSENT
    except OSError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return None
    if not stat.S_ISDIR(st.st_mode):
        from lashctl.fsutil import describe_mode

        return "a regular file" if stat.S_ISREG(st.st_mode) else describe_mode(st.st_mode)
    if not os.access(root, os.X_OK):
        return None
    markers = [os.path.join(root, OBJECTS_DIR), os.path.join(root, MANIFEST_NAME)]
    if (
        manifest is not None
        and not is_url(str(manifest))
        and not is_lash_sqlite(str(manifest))
        and os.path.dirname(os.path.abspath(manifest)) == os.path.abspath(root)
    ):
        markers.append(str(manifest))
    return None if any(os.path.lexists(m) for m in markers) else EMPTY


def unwritten(manifest):
    """The default store's JSON-lines manifest before anything was stored
    there, for a command that creates no store (``jsonl.manifest.Unwritten``)."""
    from lashctl.backends.manifests.jsonl.manifest import Unwritten

    return Unwritten(manifest)
