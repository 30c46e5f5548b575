"""S3Blobs: the blob half of a lash store in an S3-compatible bucket (obstore).

The root is ``s3://BUCKET/PREFIX`` (the prefix may be empty or have several
segments). Keys are exactly those lash writes (README, "The store format")::

    <prefix>/sha256/<id[0:2]>/<id>           blob bytes
    <prefix>/sha256/<id[0:2]>/<id>.json      metadata sidecar (Metadata.encode())
    <prefix>/quarantine/<stamp>-<id>[.json]  corrupt blobs moved aside

Configuration is the AWS way, from the environment, read by obstore's
``S3Store`` (object_store's ``AmazonS3Builder::from_env``, which takes every
``AWS_*`` variable that names one of its settings):

- ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``
  (or ``AWS_TOKEN``): static credentials; without them obstore tries web
  identity (``AWS_WEB_IDENTITY_TOKEN_FILE``, ``AWS_ROLE_ARN``), the ECS
  container endpoint and the EC2 instance metadata service. It does not read
  ``~/.aws/credentials`` or ``AWS_PROFILE``;
- ``AWS_REGION`` or ``AWS_DEFAULT_REGION``: the bucket's region;
- ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT``; ``AWS_ENDPOINT_URL_S3`` wins over
  both): an S3-compatible server (MinIO, Ceph, R2, moto);
- ``AWS_ALLOW_HTTP=true``: allow a plain-http endpoint;
- ``AWS_VIRTUAL_HOSTED_STYLE_REQUEST``, ``AWS_SKIP_SIGNATURE``,
  ``AWS_REQUEST_PAYER`` and the ``AWS_SSE_*`` keys, as obstore documents.

This module is imported only when a URL names it, and imports obstore itself
lazily, so local commands never pay for it.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TypeVar

from lashctl.backends import require_extra, strip_password
from lashctl.backends.base import (
    LAYOUT_RECORD,
    check_layout_record_size,
    parse_layout_record,
    same_layout_record,
    FILE,
    LAYOUT_SIDECARS,
    BlobBackend,
    BlobStat,
    Found,
    Progress,
    Staged,
)
from lashctl.errors import (
    Corrupt,
    Denied,
    LashctlError,
    NotFound,
    StoreIOError,
    Unavailable,
    UsageError,
)
from lashctl.backends.blobs.spool import Spool
from lashctl.ids import is_valid_id

if TYPE_CHECKING:
    from lashctl.sidecar import Metadata

CHUNK = 1024 * 1024
SIDECAR_SUFFIX = ".json"
OBJECTS, QUARANTINE = "sha256", "quarantine"

MULTIPART_THRESHOLD = 8 * 1024 * 1024  # bigger staged files go up as multipart uploads
PART_SIZE = 8 * 1024 * 1024
PART_CONCURRENCY = 4  # parts in flight per upload: bounds memory to about 32 MiB
DELETE_BATCH = 1000  # keys per DeleteObjects request (the S3 limit)
LIST_PAGE = 1000
EMPTY_ID = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"  # sha256 of no bytes
LIST_MIN = 4  # ids of one shard from which stat_many lists the shard rather than HEAD each
CONCURRENCY = 16  # requests in flight for a batch of HEADs or deletes
PARALLEL_READS = 8  # blobs verify re-hashes at once (a 1 MiB buffer each)

# S3 error codes that mean "your credentials or your rights", not "try again".
_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "AllAccessDisabled",
        "AccountProblem",
        "InvalidSecurity",
        "MissingSecurityHeader",
    }
)
_CODE = re.compile(r"<Code>([A-Za-z0-9.]+)</Code>")
_STATUS = re.compile(r"status code: (\d{3})")
_URL_HOST = re.compile(r"(https?)://(?:[^@/\s]*@)?([^/\s]+)")
_HTTP_KIND = re.compile(r"kind: ([A-Za-z]+)")
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")

T = TypeVar("T")
R = TypeVar("R")


def map_bounded(fn: Callable[[T], R], items: Iterable[T], limit: int = CONCURRENCY) -> Iterator[R]:
    """``fn`` over ``items`` on up to ``limit`` threads, results in input order.

    Lazy and bounded: at most ``2 * limit`` calls are submitted ahead of the
    result being consumed, whatever the number of items (obstore releases the
    GIL while a request is in flight). The first exception is raised in order.
    """
    with ThreadPoolExecutor(max_workers=max(1, limit), thread_name_prefix="lashctl-s3") as pool:
        pending: deque = deque()
        try:
            for item in items:
                if len(pending) >= 2 * limit:
                    yield pending.popleft().result()
                pending.append(pool.submit(fn, item))
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://BUCKET/PREFIX`` -> (bucket, prefix without leading, trailing or doubled slashes)."""
    if not url.startswith("s3://"):
        raise UsageError(f"not an s3:// URL: {strip_password(url)!r}")
    bucket, _, rest = url[len("s3://") :].partition("/")
    if not _BUCKET.fullmatch(bucket):
        raise UsageError(f"invalid S3 bucket name in {strip_password(url)!r}")
    segments = [s for s in rest.split("/") if s]
    if any(s in (".", "..") for s in segments):
        raise UsageError(f"invalid S3 prefix in {strip_password(url)!r}: '.' and '..' segments are not allowed")
    return bucket, "/".join(segments)


def _mtime_ms(meta: dict) -> int:
    return int(meta["last_modified"].timestamp() * 1000)


def _stat_of(meta: dict) -> BlobStat:
    return BlobStat(size=int(meta["size"]), mtime_ms=_mtime_ms(meta), kind=FILE, token=meta.get("e_tag"))


class _ObjectReader(io.RawIOBase):
    """A readable binary stream over a GET's body, chunk by chunk (never whole)."""

    def __init__(self, result, where: str, translate: Callable[[BaseException, str, str], BaseException]) -> None:
        super().__init__()
        self.meta = result.meta
        self._stream = result.stream(min_chunk_size=CHUNK)
        self._where = where
        self._translate = translate
        self._buf = memoryview(b"")

    def readable(self) -> bool:
        return True

    def _next_chunk(self) -> bool:
        try:
            chunk = next(self._stream)
        except StopIteration:
            return False
        except Exception as exc:
            raise self._translate(exc, "read", self._where) from exc
        self._buf = memoryview(chunk).cast("B")
        return True

    def readinto(self, buffer) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed stream")
        while not self._buf:
            if not self._next_chunk():
                return 0
        view = memoryview(buffer).cast("B")
        n = min(len(view), len(self._buf))
        view[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def close(self) -> None:
        self._stream = iter(())
        self._buf = memoryview(b"")
        super().close()


class PlainHttp(UsageError):
    """A plain-http endpoint that AWS_ALLOW_HTTP does not allow."""


class S3Blobs(BlobBackend):
    """Content-addressed blobs and their sidecars in an S3-compatible bucket.

    Implements ``lashctl.backends.base.BlobBackend``. Staging is a private
    temporary file (mode 0600) in the system temp directory: the bytes are
    hashed as they arrive, and only ``install`` uploads them under their id.
    """

    parallel_reads = PARALLEL_READS  # reads are requests: verify streams this many at once

    def __init__(
        self, url: str, layout: str = LAYOUT_SIDECARS, *, max_retries: int = 3, retry_timeout_s: float = 30.0
    ) -> None:
        require_extra("obstore", "s3", "an s3:// store")
        self.bucket, self.prefix = parse_s3_url(url)
        self.name = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        self.layout = layout
        self._base = f"{self.prefix}/" if self.prefix else ""
        self._objects = f"{self._base}{OBJECTS}/"
        self._quarantine = f"{self._base}{QUARANTINE}/"
        self._retry = {"max_retries": max_retries, "retry_timeout": timedelta(seconds=retry_timeout_s)}
        self._store_obj = None
        self._spool = Spool()
        self._depth = 0
        self._conditional_put = True  # until the server says it has no If-None-Match
        self._sidecars_seen: dict[str, bool] = {}  # id -> had a sidecar, as stat_many's listings saw

    # -- the client ------------------------------------------------------------------
    @property
    def _store(self):
        if self._store_obj is None:
            from obstore.store import S3Store

            try:
                # Only the bucket and the retry policy are given here: everything
                # else comes from AWS_* (passing client options would drop the
                # ones obstore reads from the environment, AWS_ALLOW_HTTP among them).
                self._store_obj = S3Store(self.bucket, retry_config=self._retry)
            except Exception as exc:  # a malformed AWS_* value
                raise UsageError(f"cannot configure S3 for {self.name}: {_first_line(exc)}") from exc
        return self._store_obj

    @contextmanager
    def opened(self) -> Iterator[S3Blobs]:
        """Batches wrap themselves in this; the client (and its connection pool)
        lives as long as the backend, so nesting costs nothing."""
        self._depth += 1
        try:
            yield self
        finally:
            self._depth -= 1

    # -- keys ------------------------------------------------------------------------
    def _key(self, attachment_id: str, sidecar: bool = False) -> str:
        # Last line of defence: a key is only ever built from a valid id.
        if not is_valid_id(attachment_id):
            raise ValueError(f"not a valid attachment id: {attachment_id!r}")
        return f"{self._objects}{attachment_id[:2]}/{attachment_id}{SIDECAR_SUFFIX if sidecar else ''}"

    def _url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def where(self, attachment_id: str, sidecar: bool = False) -> str:
        return self._url(self._key(attachment_id, sidecar))

    # -- errors ----------------------------------------------------------------------
    def _translate(self, exc: BaseException, action: str, where: str) -> BaseException:
        """One lashctl error, one line, for an obstore failure (never a credential)."""
        if isinstance(exc, LashctlError):
            return exc
        from obstore import exceptions as oe

        text = str(exc)
        code_match = _CODE.search(text)
        code = code_match.group(1) if code_match else None
        status_match = _STATUS.search(text)
        status = int(status_match.group(1)) if status_match else None
        if code == "NoSuchBucket":
            return UsageError(f"bucket {self.bucket} does not exist")
        if (
            isinstance(exc, (oe.PermissionDeniedError, oe.UnauthenticatedError))
            or code in _DENIED_CODES
            or status in (401, 403)
        ):
            detail = code or (f"HTTP {status}" if status else "permission denied")
            return Denied(
                f"cannot {action} {where}: access denied by the server ({detail}); "
                f"check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and the bucket's policy"
            )
        if isinstance(exc, FileNotFoundError):
            return NotFound(f"cannot {action} {where}: no such object")
        if isinstance(exc, (oe.UnknownConfigurationKeyError, ValueError)):
            return UsageError(f"cannot {action} {where}: {_first_line(exc)}")
        if "invalid path" in text.lower() or "illegal character" in text.lower():
            # Bad data in the bucket, not an outage: rerunning would not help.
            return Corrupt(
                f"cannot {action} {where}: an object there has a key the object store "
                f"library refuses ({_first_line(exc)}); rename or delete that object"
            )
        if isinstance(exc, oe.BaseError):
            endpoint = _endpoint_of(text)
            if (endpoint or "").startswith("http://") and os.environ.get("AWS_ALLOW_HTTP", "").lower() != "true":
                # obstore refuses plain http unless told, and says only "unknown error".
                return PlainHttp(
                    f"cannot {action} {where}: the endpoint {endpoint} is plain http; "
                    "set AWS_ALLOW_HTTP=true to allow it"
                )
            kind = _HTTP_KIND.search(text)
            if status is not None:
                reason = f"the server answered HTTP {status}" + (f" ({code})" if code else "")
            elif kind is not None or "HTTP error" in text or "error sending request" in text:
                what = kind.group(1).lower() if kind else "connection"
                reason = f"cannot reach {endpoint or 'the S3 endpoint'} ({what} error)"
            else:
                reason = _first_line(exc)
            return Unavailable(f"cannot {action} {where}: {reason}")
        if isinstance(exc, OSError):
            return StoreIOError.wrap(action, where, exc)
        return exc

    @contextmanager
    def _errors(self, action: str, where: str) -> Iterator[None]:
        try:
            yield
        except LashctlError:
            raise
        except Exception as exc:
            mapped = self._translate(exc, action, where)
            if mapped is exc:
                raise
            raise mapped from exc

    def _head(self, key: str) -> dict | None:
        import obstore

        try:
            with self._errors("stat", self._url(key)):
                return obstore.head(self._store, key)
        except NotFound:
            return None

    def _list(self, prefix: str, offset: str | None = None) -> Iterator[dict]:
        """Every object under ``prefix`` in key order, a page at a time."""
        import obstore

        where = self._url(prefix)
        with self._errors("list", where):
            stream = obstore.list(self._store, prefix, offset=offset, chunk_size=LIST_PAGE)
        previous = offset or ""
        while True:
            try:
                with self._errors("list", where):
                    batch = next(stream)
            except StopIteration:
                return
            for meta in batch:
                path = meta["path"]
                if path <= previous:
                    # The listing comes in key order, and orphan detection and the
                    # sweep's merge depend on it. A key that seems out of order is one
                    # the object store library shortened (a "folder marker" ending in
                    # "/" comes back without it, and sorts before its neighbours): it
                    # is no blob, and it is skipped.
                    continue
                previous = path
                yield meta

    # -- the root --------------------------------------------------------------------
    def _probe(self) -> None:
        """One cheap LIST of a prefix that holds nothing: the bucket exists and
        we may read it (a HEAD cannot tell a missing bucket from a missing key)."""
        for _ in self._list(f"{self._base}.lashctl-probe/"):
            break

    def check_root(self) -> None:
        """UsageError if the bucket does not exist; Denied/Unavailable as the server says.
        There are no symlinks or owners to refuse in a bucket."""
        self._probe()

    def ensure_writable_layout(self) -> None:
        """An object store has no directories to create: the bucket must exist."""
        self.check_root()

    def check_layout(self) -> None:
        self._probe()

    def exists(self) -> bool:
        try:
            self._probe()
        except PlainHttp:
            raise  # the bucket may well exist: the endpoint was refused
        except UsageError:
            return False
        return True

    # -- stat and sidecars -----------------------------------------------------------
    def recorded_layout(self) -> str | None:
        import obstore

        key = self._base + LAYOUT_RECORD
        try:
            with self._errors("read", self._url(key)):
                got = obstore.get(self._store, key)
                check_layout_record_size(int(got.meta["size"]), self._url(key))  # refused unread
                data = bytes(got.bytes())
        except NotFound:
            return None
        return parse_layout_record(data, self._url(key))

    def record_layout(self, layout: str) -> bool:
        """Created only where no record exists (``If-None-Match: *``); a server
        without the condition is written after a read (best effort)."""
        import obstore
        from obstore.exceptions import AlreadyExistsError, NotSupportedError

        key, data = self._base + LAYOUT_RECORD, f"{layout}\n".encode()
        if self._conditional_put:
            try:
                with self._errors("write", self._url(key)):
                    try:
                        obstore.put(self._store, key, data, mode="create", use_multipart=False)
                        return True
                    except AlreadyExistsError:
                        return same_layout_record(self.recorded_layout(), layout, self.name)
                    except NotSupportedError:
                        self._conditional_put = False
            except Unavailable as exc:
                if "HTTP 501" not in exc.message:
                    raise
                self._conditional_put = False  # 501 Not Implemented: the server has no such condition
        recorded = self.recorded_layout()
        if recorded is not None:
            return same_layout_record(recorded, layout, self.name)
        with self._errors("write", self._url(key)):
            obstore.put(self._store, key, data, use_multipart=False)
        return True

    def date_blob(self, attachment_id: str, mtime_ms: int) -> bool:
        return False  # LastModified is the copy's: S3 has no way to set it

    def stat(self, attachment_id: str, sidecar: bool = False) -> BlobStat | None:
        meta = self._head(self._key(attachment_id, sidecar))
        return None if meta is None else _stat_of(meta)

    def stat_many(self, attachment_ids: list[str]) -> dict[str, BlobStat | None]:
        """``stat`` of many blobs, the same answers in fewer requests.

        A shard holding ``LIST_MIN`` or more of the ids is read with listings
        (up to a page of answers a request); the other ids get HEADs. All of
        it in flight together, ``CONCURRENCY`` requests at a time. A listing
        also shows which of its ids have a sidecar: a ``delete_many`` given
        these stats then deletes no sidecar key it knows to be absent.
        """
        by_shard: dict[str, list[str]] = {}
        for attachment_id in dict.fromkeys(attachment_ids):
            self._key(attachment_id)  # a bad id is refused before any request
            by_shard.setdefault(attachment_id[:2], []).append(attachment_id)
        work: list[list[str]] = []
        for ids in by_shard.values():
            work += [sorted(ids)] if len(ids) >= LIST_MIN else [[i] for i in ids]
        _ = self._store  # made once here, not raced for by the threads below
        out: dict[str, BlobStat | None] = {}
        for stats, sidecars in map_bounded(self._stat_group, work):
            out.update(stats)
            self._sidecars_seen.update(sidecars)
        return {i: out[i] for i in attachment_ids}

    def _stat_group(self, ids: list[str]) -> tuple[dict[str, BlobStat | None], dict[str, bool]]:
        """Stats of sorted ids of one shard, and (when listed) whether each has
        a sidecar: a HEAD for one id, else listings in key order from just
        before the first unanswered id. A blob's sidecar key comes right after
        its own. A listing that runs a page past the last answer without
        reaching the next id is left, and a new one starts at that id (so
        sparse ids cost about one request each, dense ones a page of answers
        per request)."""
        if len(ids) == 1:
            return {ids[0]: self.stat(ids[0])}, {}
        keys = [self._key(i) for i in ids]
        out: dict[str, BlobStat | None] = {}
        sidecars: dict[str, bool] = {}
        pos, seen = 0, ""  # seen: the last key listed (a restart resumes after it)
        while pos < len(keys):
            shard = keys[pos].rsplit("/", 1)[0] + "/"
            waste = 0
            for meta in self._list(shard, offset=max(keys[pos][:-1], seen)):
                path = seen = meta["path"]
                while pos < len(keys) and path > keys[pos] + SIDECAR_SUFFIX:
                    out.setdefault(ids[pos], None)  # the listing passed both its keys
                    sidecars.setdefault(ids[pos], False)
                    pos += 1
                    waste = 0
                if pos == len(keys):
                    break
                if path == keys[pos]:
                    if int(meta["size"]) == 0 and ids[pos] != EMPTY_ID:
                        # Not these bytes: a folder marker "<id>/", which the
                        # library lists without its slash. Ask the object itself.
                        out[ids[pos]] = self.stat(ids[pos])
                    else:
                        out[ids[pos]] = _stat_of(meta)
                    waste = 0
                elif path == keys[pos] + SIDECAR_SUFFIX:
                    out.setdefault(ids[pos], None)
                    sidecars[ids[pos]] = True
                    pos += 1
                    waste = 0
                else:
                    waste += 1
                    if waste > LIST_PAGE:
                        break  # a page of other keys: start again nearer the next id
            else:
                for rest in ids[pos:]:  # the listing ended before them
                    out.setdefault(rest, None)
                    sidecars.setdefault(rest, False)
                pos = len(keys)
        return out, sidecars

    def read_sidecar(self, attachment_id: str) -> Metadata | None:
        import obstore

        from lashctl.sidecar import MAX_SIDECAR_BYTES, decode

        key = self._key(attachment_id, sidecar=True)
        where = self._url(key)
        try:
            with self._errors("read", where):
                result = obstore.get(self._store, key)
        except NotFound:
            return None
        if int(result.meta["size"]) > MAX_SIDECAR_BYTES:
            raise Corrupt(f"undecodable sidecar {where}: larger than {MAX_SIDECAR_BYTES} bytes")
        with self._errors("read", where):
            data = bytes(result.bytes())
        return decode(data, where)

    def write_sidecar(self, meta: Metadata, durable: bool = True) -> bool:
        """PUT the sidecar unless it already holds exactly these bytes. A PUT is
        atomic and durable once it returns, whatever ``durable`` says."""
        import obstore

        from lashctl.sidecar import MAX_SIDECAR_BYTES

        key = self._key(meta.attachment_id, sidecar=True)
        where = self._url(key)
        data = meta.encode()
        try:
            with self._errors("read", where):
                result = obstore.get(self._store, key)
                if int(result.meta["size"]) == len(data) <= MAX_SIDECAR_BYTES and bytes(result.bytes()) == data:
                    return False
        except NotFound:
            pass
        with self._errors("write", where):
            obstore.put(self._store, key, data, use_multipart=False)
        return True

    # -- writing ---------------------------------------------------------------------
    def stage(self, source: BinaryIO, source_name: str, progress: Progress | None = None) -> Staged:
        """Stream ``source`` into a private local spool file while hashing it
        (``lashctl.backends.blobs.spool``)."""
        return self._spool.stage(source, source_name, progress)

    def open_staged(self, staged: Staged) -> BinaryIO:
        return self._spool.open(staged)

    def discard(self, staged: Staged) -> None:
        self._spool.discard(staged)

    def discard_pending(self) -> None:
        """Remove every spool file this process made that has not been uploaded."""
        self._spool.discard_pending()

    def install(self, staged: Staged) -> bool:
        """Upload staged bytes under their id; True if an object of that size was
        already there (a dedup hit).

        The bytes are uploaded either way: a dedup hit refreshes LastModified
        (a grace-period sweep sees the blob as recent), and rotten bytes of the
        same size are healed; there is no cheaper way to know them intact.

        A small file goes up in one PUT that only creates (``If-None-Match: *``):
        one request when the id is new. When the server answers that the object
        exists, a HEAD reads its size and a plain PUT refreshes it. A server
        that does not implement the condition is asked with a HEAD first, then
        for every later upload. Files over ``MULTIPART_THRESHOLD`` go up as a
        multipart upload (``PART_SIZE`` parts, ``PART_CONCURRENCY`` at a time)
        after a HEAD, since a conditional multipart upload would send every
        part before learning the object was there. The temporary file is removed.
        """
        import obstore
        from obstore.exceptions import AlreadyExistsError, NotSupportedError

        key = self._key(staged.attachment_id)
        where = self._url(key)
        multipart = staged.byte_len > MULTIPART_THRESHOLD
        if not multipart and self._conditional_put:
            try:
                with self._errors("upload", where):
                    try:
                        obstore.put(self._store, key, Path(staged.handle), mode="create", use_multipart=False)
                    except AlreadyExistsError:
                        pass
                    except NotSupportedError:
                        self._conditional_put = False
                    else:
                        self.discard(staged)
                        return False
            except Unavailable as exc:
                if "HTTP 501" not in exc.message:
                    raise
                self._conditional_put = False  # 501 Not Implemented: the server has no such condition
        existing = self._head(key)
        existed = existing is not None and int(existing["size"]) == staged.byte_len
        with self._errors("upload", where):
            obstore.put(
                self._store,
                key,
                Path(staged.handle),
                use_multipart=multipart,
                chunk_size=PART_SIZE,
                max_concurrency=PART_CONCURRENCY,
            )
        self.discard(staged)
        return existed

    def land(self, items: list[tuple[Staged, Metadata | None]]) -> list[bool]:
        """Upload a batch, ``CONCURRENCY`` blobs in flight; each blob's sidecar
        is PUT (unconditionally: one request) before the blob. Durable once
        each PUT returns."""
        import obstore

        _ = self._store  # made once here, not raced for by the threads below

        def one(item: tuple[Staged, Metadata | None]) -> bool:
            staged, meta = item
            if meta is not None:
                key = self._key(meta.attachment_id, sidecar=True)
                with self._errors("write", self._url(key)):
                    obstore.put(self._store, key, meta.encode(), use_multipart=False)
            return self.install(staged)

        return list(map_bounded(one, items))

    def sync(self, attachment_ids: Iterable[str]) -> None:
        """Nothing to do: a PUT or DELETE is durable once it returns."""

    # -- reading ---------------------------------------------------------------------
    def open(self, attachment_id: str) -> BinaryIO:
        """A stream of the blob's bytes (``.meta`` is the object's metadata); NotFound if absent."""
        import obstore

        key = self._key(attachment_id)
        where = self._url(key)
        try:
            with self._errors("read", where):
                result = obstore.get(self._store, key)
        except NotFound as exc:
            raise NotFound(f"no blob {attachment_id} in store {self.name}") from exc
        return _ObjectReader(result, where, self._translate)  # type: ignore[return-value]

    def hash(self, attachment_id: str, progress: Progress | None = None) -> tuple[str, BlobStat]:
        """Re-hash a blob as it streams: (hex digest, the stat of the object
        read, whose token is the ETag of exactly the bytes hashed)."""
        digest = hashlib.sha256()
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        with self.open(attachment_id) as reader:
            hashed = _stat_of(reader.meta)
            while n := reader.readinto(buffer):
                digest.update(view[:n])
                if progress is not None:
                    progress(n)
        return digest.hexdigest(), hashed

    def iter_ids(self, prefix: str = "") -> Iterator[str]:
        """Ids of the blob objects, in id order, streamed from the listing.

        With a prefix of 2 or more characters only its shard is listed, from
        the first key that can match to the first that cannot.
        """
        if len(prefix) >= 2:
            shard = f"{self._objects}{prefix[:2]}/"
            # Start after the greatest key that sorts before every match.
            listing = self._list(shard, offset=shard + prefix[:-1] if len(prefix) > 2 else None)
        else:
            listing = self._list(self._objects)
        for meta in listing:
            name = meta["path"][len(self._objects) :]
            shard_name, slash, rest = name.partition("/")
            if len(prefix) >= 2 and not rest.startswith(prefix) and rest > prefix:
                return  # key order: nothing further in this shard can match
            if slash and shard_name == rest[:2] and is_valid_id(rest) and rest.startswith(prefix):
                yield rest

    def walk(self) -> Iterator[Found]:
        """Strays under ``sha256/``: keys that are not ``<2hex>/<id>`` or
        ``<2hex>/<id>.json`` in their own shard, and sidecars with no blob.

        The listing is in key order, so a blob's key comes just before its
        sidecar's (only keys of the same blob id sort between them): keeping
        the last blob id seen detects orphan sidecars in O(1) memory.
        ``quarantine/`` holds no strays; keys outside ``sha256/`` are not lash's.
        An empty folder marker (``<key>/``, which the library lists as
        ``<key>``) is skipped: no object of that name exists to remove.

        Unfinished multipart uploads (the object-store form of staging litter)
        are not found: obstore exposes no ListMultipartUploads, and this
        backend does not speak S3 itself. A bucket lifecycle rule
        (AbortIncompleteMultipartUpload) is the way to clear them.
        """
        last_blob: str | None = None
        for meta in self._list(self._objects):
            key = meta["path"]
            name = key[len(self._objects) :]
            shard_name, slash, rest = name.partition("/")
            if slash and shard_name == rest[:2]:
                if is_valid_id(rest):
                    last_blob = rest
                    continue
                if rest.endswith(SIDECAR_SUFFIX):
                    blob_id = rest[: -len(SIDECAR_SUFFIX)]
                    if is_valid_id(blob_id) and blob_id == last_blob:
                        continue
            if int(meta["size"]) == 0 and self._head(key) is None:
                continue  # a folder marker "<key>/", listed without its slash: no object of that name
            yield Found(area="blobs", name=name, where=self._url(key), stat=_stat_of(meta), handle=key)

    def remove(self, found: Found) -> None:
        import obstore

        key = found.handle
        if not isinstance(key, str) or not key.startswith(self._objects) or key == self._objects:
            raise ValueError(f"not an object this store's walk found: {found.where}")
        with self._errors("delete", self._url(key)):
            obstore.delete(self._store, key)

    # -- deleting --------------------------------------------------------------------
    def delete_problem(self, attachment_id: str) -> str | None:
        """Nothing in a bucket makes a delete fail in advance (no directories, no links)."""
        self._key(attachment_id)
        return None

    def delete(self, attachment_id: str) -> int:
        import obstore

        blob, sidecar = self._key(attachment_id), self._key(attachment_id, sidecar=True)
        meta = self._head(blob)
        with self._errors("delete", self._url(blob)):
            obstore.delete(self._store, [blob, sidecar])
        return 0 if meta is None else int(meta["size"])

    def delete_many(
        self, attachment_ids: list[str], known: dict[str, BlobStat | None] | None = None
    ) -> dict[str, int | str]:
        """Delete blobs and sidecars with batched DeleteObjects requests.

        Sizes come from ``known`` (stats the caller just took) or concurrent
        HEADs; the keys of several ids share a request, up to ``DELETE_BATCH``
        keys. A batch that fails is retried id by id, so each id gets the bytes
        freed or the reason it failed (a missing bucket, a refused access or an
        unreachable server stops the whole call instead).
        """
        for attachment_id in attachment_ids:
            self._key(attachment_id)  # refuse a bad id before touching anything
        ids = list(dict.fromkeys(attachment_ids))
        _ = self._store  # made once here, not raced for by the threads below
        if known is not None and all(i in known for i in ids):
            sizes = [known[i].size if known[i] is not None else 0 for i in ids]
        else:
            sizes = list(map_bounded(self._size_or_reason, ids))
        results: dict[str, int | str] = {}
        batch: list[str] = []  # ids whose keys go in the next request
        batch_keys: list[str] = []
        for attachment_id, size in zip(ids, sizes):
            if isinstance(size, str):
                results[attachment_id] = size
                continue
            keys = [self._key(attachment_id)]
            # A sidecar the caller's stats saw absent is not asked for (one
            # written since is kept: litter that gc removes, never lost bytes).
            if known is None or self._sidecars_seen.pop(attachment_id, True):
                keys.append(self._key(attachment_id, sidecar=True))
            if len(batch_keys) + len(keys) > DELETE_BATCH:
                self._delete_batch(batch, batch_keys, results)
                batch, batch_keys = [], []
            batch.append(attachment_id)
            batch_keys += keys
        if batch:
            self._delete_batch(batch, batch_keys, results)
        for attachment_id, size in zip(ids, sizes):
            results.setdefault(attachment_id, size)
        return results

    def _delete_batch(self, ids: list[str], keys: list[str], results: dict[str, int | str]) -> None:
        """One DeleteObjects request; if it fails, each id alone (its outcome in ``results``)."""
        import obstore

        try:
            with self._errors("delete", f"{len(keys)} objects in {self.name}"):
                obstore.delete(self._store, keys)
        except (UsageError, Denied, Unavailable):
            raise
        except LashctlError:
            for attachment_id, outcome in zip(ids, map_bounded(self._delete_one, ids)):
                results[attachment_id] = outcome

    def _size_or_reason(self, attachment_id: str) -> int | str:
        try:
            meta = self._head(self._key(attachment_id))
        except (UsageError, Denied, Unavailable):
            raise
        except LashctlError as exc:
            return exc.message
        return 0 if meta is None else int(meta["size"])

    def _delete_one(self, attachment_id: str) -> int | str:
        try:
            return self.delete(attachment_id)
        except (UsageError, Denied, Unavailable):
            raise
        except LashctlError as exc:
            return exc.message

    # -- quarantine ------------------------------------------------------------------
    def quarantine(self, attachment_id: str, hashed: BlobStat, stamp: str) -> str | None:
        """Move a corrupt blob (and its sidecar) to ``quarantine/<stamp>-<id>``,
        copy then delete, only while its ETag is still ``hashed.token``.

        S3 has no compare-and-move: the ETag is checked before the copy and
        again before the delete, so only a put landing in the few milliseconds
        between that check and the delete can be lost (and a re-put heals it).
        Returns where the blob went, or None if it changed or vanished.
        """
        import obstore

        blob, sidecar = self._key(attachment_id), self._key(attachment_id, sidecar=True)
        target = f"{self._quarantine}{stamp}-{attachment_id}"

        def unchanged() -> bool:
            meta = self._head(blob)
            return (
                meta is not None
                and hashed.token is not None
                and meta.get("e_tag") == hashed.token
                and int(meta["size"]) == hashed.size
            )

        if not unchanged():
            return None
        with self._errors("quarantine", self._url(blob)):
            try:
                obstore.copy(self._store, blob, target)
            except FileNotFoundError:
                return None  # deleted meanwhile
            try:
                obstore.copy(self._store, sidecar, target + SIDECAR_SUFFIX)
                has_sidecar = True
            except FileNotFoundError:
                has_sidecar = False
            if not unchanged():
                # A put replaced it during the copy: leave it, drop our copies.
                obstore.delete(self._store, [target, target + SIDECAR_SUFFIX])
                return None
            obstore.delete(self._store, [blob, sidecar] if has_sidecar else [blob])
        return self._url(target)


def _first_line(exc: BaseException) -> str:
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return line if len(line) <= 200 else line[:197] + "..."


def _endpoint_of(text: str) -> str | None:
    """scheme://host:port of the URL an obstore error names (never its user info)."""
    match = _URL_HOST.search(text)
    return f"{match.group(1)}://{match.group(2)}" if match else None
