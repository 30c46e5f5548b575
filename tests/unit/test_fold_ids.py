"""``Manifest.fold_ids``, what a sweep confirms its candidates with, parses
only the lines that may be events of those ids: whatever the log's lines
look like, its rows are those of a fold of every line."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lashctl.backends.manifests.jsonl import log
from lashctl.backends.manifests.jsonl.log import Manifest

IDS = ["a" * 64, "ab" + "0" * 62, "ab" + "1" * 62, "f" * 63 + "0", "0" * 64]
SESSIONS = ["s1", "s2"]

event = st.tuples(
    st.sampled_from(["intent", "commit", "forget"]),
    st.sampled_from(IDS),
    st.sampled_from(SESSIONS),
    st.integers(1, 50),
    # how the line is spelled
    st.sampled_from(
        ["plain", "spaced", "escaped key", "escaped id", "decoy", "uri of another", "crlf", "blank before"]
    ),
    st.sampled_from(IDS),  # the other id a decoy or a URI names
)


def _line(op: str, aid: str, session: str, at: int, form: str, other: str) -> bytes:
    obj: dict = {"op": op, "attachment_id": aid, "session_id": session}
    if op == "intent":
        obj["canonical_uri"] = "sha256:" + (other if form == "uri of another" else aid)
        obj["intent_at_epoch_ms"] = at
    elif op == "commit":
        obj["committed_at_epoch_ms"] = at
    text = json.dumps(obj, separators=(",", ":"))
    if form == "spaced":
        text = json.dumps(obj, separators=(" , ", " : "))
    elif form == "escaped key":
        text = text.replace('"attachment_id"', '"attachment_\\u0069d"')
    elif form == "escaped id":
        text = text.replace(f'"attachment_id":"{aid}"', f'"attachment_id":"\\u00{ord(aid[0]):x}{aid[1:]}"')
    elif form == "decoy":
        text = text[:-1] + f',"note":{{"attachment_id":"{other}"}}}}'
    elif form == "crlf":
        text += "\r"
    prefix = "\n" if form == "blank before" else ""
    return (prefix + text + "\n").encode()


def _reference(path, wanted):
    """Every line parsed and folded (``read_state``), restricted to ``wanted``."""
    state = Manifest(path, warn=lambda message: None).read_state()
    return {i: sorted(state.rows_for(i), key=lambda r: r.session_id) for i in wanted}


@pytest.mark.parametrize("finder", ["find", "trie", "every id key"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    events=st.lists(event, max_size=30),
    wanted=st.sets(st.sampled_from(IDS), min_size=1),
    header=st.sampled_from(["none", "plain", "bom"]),
    tail=st.sampled_from(["none", "valid", "torn"]),
    chunk=st.sampled_from([1, 7, 64, 4096]),
)
def test_fold_ids_agrees_with_a_fold_of_every_line(
    tmp_path_factory, monkeypatch, finder, events, wanted, header, tail, chunk
):
    monkeypatch.setattr(log, "_SCAN_CHUNK", chunk)
    monkeypatch.setattr(log, "_FIND_IDS", len(IDS) if finder == "find" else 0)
    if finder == "every id key":
        monkeypatch.setattr(log, "_TRIE_IDS", 0)
    data = b""
    if header != "none":
        data = (
            b"\xef\xbb\xbf" if header == "bom" else b""
        ) + b'{"op":"header","format":"lashctl-manifest","version":1}\n'
    data += b"".join(_line(*e) for e in events)
    if tail == "valid":
        data += _line("commit", IDS[0], "s1", 99, "plain", IDS[0])[:-1]
    elif tail == "torn":
        data += _line("commit", IDS[0], "s1", 99, "plain", IDS[0])[:-7]
    path = tmp_path_factory.mktemp("log") / "manifest.jsonl"
    path.write_bytes(data)
    assert Manifest(path).fold_ids(set(wanted)) == _reference(path, wanted)


def test_a_malformed_line_of_a_candidate_still_stops_the_fold(tmp_path):
    path = tmp_path / "manifest.jsonl"
    good = _line("intent", IDS[0], "s1", 5, "plain", IDS[0])
    other = b"".join(_line("intent", IDS[1], f"s{n}", 5, "plain", IDS[1]) for n in range(3))
    path.write_bytes(good + other + b'{"op":"commit","attachment_id":"' + IDS[0].encode() + b'",\n' + other)
    from lashctl.errors import Corrupt

    with pytest.raises(Corrupt, match=r"manifest\.jsonl:5: malformed manifest line"):
        Manifest(path).fold_ids({IDS[0]})
