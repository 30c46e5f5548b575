"""Test-only shorthands for events and blob checks (nothing in lashctl uses them)."""

from __future__ import annotations

from lashctl.fold import Event


def intent_event(attachment_id: str, session_id: str, at_ms: int) -> Event:
    return Event.intent(attachment_id, session_id, at_ms)


def commit_event(attachment_id: str, session_id: str, at_ms: int) -> Event:
    return Event.commit(attachment_id, session_id, at_ms)


def forget_event(attachment_id: str, session_id: str) -> Event:
    return Event.forget(attachment_id, session_id)


def has_blob(blobs, attachment_id: str) -> bool:
    """A regular file is at the blob's path in a real shard (``LocalBlobs.blob_stat``)."""
    return blobs.blob_stat(attachment_id) is not None
