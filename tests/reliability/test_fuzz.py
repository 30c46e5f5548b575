"""Fuzzing the parsers that read untrusted input, with hypothesis.

- ``lashctl.backends.manifests.jsonl.log.parse_line`` on arbitrary bytes, arbitrary JSON and
  mutated events returns a valid event or raises ``Corrupt``, nothing else;
  ``Manifest.read_state`` on arbitrary file contents returns a state or raises
  ``Corrupt`` (torn-tail detection included);
- ``lashctl.sidecar.decode`` on arbitrary bytes / JSON values / mutated
  sidecars returns ``Metadata`` or raises ``Corrupt``; what it returns is
  well-formed, and what lashctl writes decodes to the same metadata;
- ``lashctl.ids.parse_id`` on arbitrary text returns an ``IdQuery`` with 4-64
  chars of ``[0-9a-f]`` or raises ``UsageError``;
- the cutoff parsers (``--older-than``/``--before``) give a cutoff the
  commands can use or raise ``UsageError``.

Default: a few hundred examples per property; ``LASHCTL_LONG_TESTS=1``: many
thousands.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lashctl import sidecar
from lashctl.backends.manifests.jsonl import log as manifest
from lashctl.errors import Corrupt, UsageError
from lashctl.ids import parse_id
from reliability_helpers import MAX_EPOCH_MS, report, scaled, shm_path  # noqa: F401 (fixture)

FUZZ = settings(
    max_examples=scaled(400, 20000),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
HEX64 = re.compile(r"[0-9a-f]{64}")
EXAMPLES = {"n": 0}
WHERE = Path("fuzz/manifest.jsonl")
ID = "ab" * 32
BIG_INT = b"9" * 5000  # past CPython's int-from-string limit (4300 digits)


def _count() -> None:
    EXAMPLES["n"] += 1


def _json_values():
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20))
    return st.recursive(
        scalars,
        lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
        max_leaves=12,
    )


def _is_epoch(value) -> bool:
    return type(value) is int and 0 <= value <= MAX_EPOCH_MS


def assert_valid_event(obj) -> None:
    assert isinstance(obj, dict), obj
    op = obj["op"]
    assert op in ("header", "intent", "commit", "forget"), op
    if op == "header":
        assert obj["format"] == "lashctl-manifest" and obj["version"] == 1 and not isinstance(obj["version"], bool)
        return
    assert isinstance(obj["attachment_id"], str) and HEX64.fullmatch(obj["attachment_id"])
    assert isinstance(obj["session_id"], str) and obj["session_id"]
    if op == "intent":
        assert isinstance(obj["canonical_uri"], str)
        assert _is_epoch(obj["intent_at_epoch_ms"])
    if op == "commit":
        assert _is_epoch(obj["committed_at_epoch_ms"])
    # An accepted event is one lashctl can write back (append, compaction).
    manifest.encode_events([obj])


def check_parse_line(raw: bytes, lineno: int = 2) -> None:
    _count()
    try:
        event = manifest.parse_line(raw, lineno, WHERE)
    except Corrupt as exc:
        assert f"{WHERE}:{lineno}" in exc.message
        return
    assert_valid_event(event)


# -- manifest lines ------------------------------------------------------------------------
@FUZZ
@given(raw=st.binary(max_size=300), lineno=st.integers(1, 3))
@example(raw=b"\xef\xbb\xbf{}", lineno=1)
@example(raw=b"[" * 100_000, lineno=2)
def test_parse_line_on_arbitrary_bytes(raw: bytes, lineno: int) -> None:
    check_parse_line(raw, lineno)


# Inputs random generation rarely reaches, kept as explicit regression cases.
HOSTILE_LINES = {
    "5000-digit number": BIG_INT,
    "5000-digit intent time": b'{"op":"intent","attachment_id":"' + ID.encode() + b'","session_id":"s",'
    b'"canonical_uri":"x","intent_at_epoch_ms":' + BIG_INT + b"}",
    "lone surrogate session": b'{"op":"intent","attachment_id":"' + ID.encode() + b'","session_id":"\\udc80",'
    b'"canonical_uri":"x","intent_at_epoch_ms":1}',
    "lone surrogate uri": b'{"op":"intent","attachment_id":"' + ID.encode() + b'","session_id":"s",'
    b'"canonical_uri":"\\ud800","intent_at_epoch_ms":1}',
    "deep nesting": b"[" * 100_000 + b"]" * 100_000,
    "NaN time": b'{"op":"commit","attachment_id":"' + ID.encode() + b'","session_id":"s","committed_at_epoch_ms":NaN}',
}


@pytest.mark.parametrize("name", list(HOSTILE_LINES))
def test_parse_line_on_hostile_lines(name: str) -> None:
    check_parse_line(HOSTILE_LINES[name])


@FUZZ
@given(value=_json_values())
def test_parse_line_on_arbitrary_json(value) -> None:
    check_parse_line(json.dumps(value).encode())


def _mutated_event():
    field_values = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(-10, 10),
        st.just(MAX_EPOCH_MS),
        st.just(MAX_EPOCH_MS + 1),
        st.floats(),
        st.text(max_size=70),
        st.just(ID),
        st.just(ID.upper()),
        st.just("../" + ID[3:]),
        st.just(""),
        st.lists(st.integers(), max_size=2),
        st.just({"a": 1}),
    )
    base = st.sampled_from(
        [
            {"op": "header", "format": "lashctl-manifest", "version": 1},
            {
                "op": "intent",
                "attachment_id": ID,
                "session_id": "s",
                "canonical_uri": "sha256:" + ID,
                "intent_at_epoch_ms": 5,
            },
            {"op": "commit", "attachment_id": ID, "session_id": "s", "committed_at_epoch_ms": 5},
            {"op": "forget", "attachment_id": ID, "session_id": "s"},
        ]
    )
    keys = st.sampled_from(
        [
            "op",
            "format",
            "version",
            "attachment_id",
            "session_id",
            "canonical_uri",
            "intent_at_epoch_ms",
            "committed_at_epoch_ms",
            "extra",
        ]
    )
    return st.tuples(base, st.dictionaries(keys, field_values, max_size=3), st.lists(keys, max_size=2))


@FUZZ
@given(spec=_mutated_event(), crlf=st.booleans())
def test_parse_line_on_mutated_events(spec, crlf: bool) -> None:
    base, changes, drops = spec
    event = {**base, **changes}
    for key in drops:
        event.pop(key, None)
    raw = json.dumps(event).encode() + (b"\r" if crlf else b"")
    check_parse_line(raw)


@FUZZ
@given(
    lines=st.lists(
        st.one_of(
            st.binary(max_size=80),
            st.builds(lambda e: json.dumps(e).encode(), _json_values()),
            st.just(
                b'{"op":"intent","attachment_id":"'
                + ID.encode()
                + b'","session_id":"s","canonical_uri":"u","intent_at_epoch_ms":7}'
            ),
            st.just(
                b'{"op":"commit","attachment_id":"' + ID.encode() + b'","session_id":"s","committed_at_epoch_ms":8}'
            ),
        ),
        max_size=6,
    ),
    end_newline=st.booleans(),
)
def test_read_state_on_arbitrary_files(shm_path: Path, lines, end_newline: bool) -> None:
    """The whole reader, torn-tail detection included: a state or Corrupt."""
    check_read_state(shm_path, lines, end_newline)


@pytest.mark.parametrize(
    "tail",
    [b'{"op":"intent","intent_at_epoch_ms":' + BIG_INT, BIG_INT, b"[" * 100_000],
    ids=["torn tail with a 5000-digit number", "bare 5000-digit number", "deep nesting"],
)
def test_read_state_on_hostile_torn_tails(shm_path: Path, tail: bytes) -> None:
    check_read_state(shm_path, [b'{"op":"header","format":"lashctl-manifest","version":1}', tail], False)


def check_read_state(shm_path: Path, lines, end_newline: bool) -> None:
    _count()
    path = shm_path / "manifest.jsonl"
    data = b"\n".join(l.replace(b"\n", b" ") for l in lines) + (b"\n" if end_newline and lines else b"")
    path.write_bytes(data)
    warnings: list[str] = []
    try:
        state = manifest.Manifest(path, warn=warnings.append).read_state()
    except Corrupt:
        return
    for row in state.rows.values():
        assert HEX64.fullmatch(row.attachment_id) and row.session_id
        assert _is_epoch(row.intent_at_epoch_ms)


# -- sidecars --------------------------------------------------------------------------------
def check_sidecar(data: bytes) -> None:
    _count()
    try:
        meta = sidecar.decode(data, "fuzz/x.json")
    except Corrupt as exc:
        assert "fuzz/x.json" in exc.message
        return
    assert isinstance(meta, sidecar.Metadata)
    assert HEX64.fullmatch(meta.attachment_id)
    assert type(meta.byte_len) is int and meta.byte_len >= 0
    assert isinstance(meta.media_type, str) and re.fullmatch(r"[^/\s;]+/[^/\s;]+", meta.media_type)
    for value in (meta.width, meta.height):
        assert value is None or (type(value) is int and value >= 0)
    assert meta.label is None or isinstance(meta.label, str)
    # What decodes can be written back and decodes the same.
    assert sidecar.decode(meta.encode(), "again") == meta


@FUZZ
@given(data=st.binary(max_size=300))
@example(data=b"\xef\xbb\xbf" + b'{"id":"' + ID.encode() + b'","media_type":"image/png","byte_len":1}')
def test_sidecar_decode_on_arbitrary_bytes(data: bytes) -> None:
    check_sidecar(data)


HOSTILE_SIDECARS = {
    "5000-digit byte_len": b'{"id":"' + ID.encode() + b'","media_type":"text/plain","byte_len":' + BIG_INT + b"}",
    "lone surrogate label": b'{"id":"' + ID.encode() + b'","media_type":"text/plain","byte_len":1,"label":"\\ud800"}',
    "deep nesting": b"[" * 100_000 + b"]" * 100_000,
    "width in type_metadata as text": b'{"id":"' + ID.encode() + b'","media_type":"image/png","byte_len":1,'
    b'"type_metadata":{"type":"image","width":"7"}}',
}


@pytest.mark.parametrize("name", list(HOSTILE_SIDECARS))
def test_sidecar_decode_on_hostile_inputs(name: str) -> None:
    check_sidecar(HOSTILE_SIDECARS[name])


@FUZZ
@given(value=_json_values())
def test_sidecar_decode_on_arbitrary_json(value) -> None:
    check_sidecar(json.dumps(value).encode())


@FUZZ
@given(
    changes=st.dictionaries(
        st.sampled_from(["id", "media_type", "byte_len", "width", "height", "label", "type_metadata", "extra"]),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.floats(),
            st.text(max_size=30),
            st.just(ID),
            st.sampled_from(["image/png", "IMAGE/JPG", "text/plain; a=b", "a/b/c", " x/y "]),
            st.fixed_dictionaries(
                {
                    "kind": st.sampled_from(["image", "video", 1]),
                    "type": st.sampled_from(["png", "jpeg", "gif", "webp", "bmp", "tiff", None]),
                }
            ),
            st.fixed_dictionaries(
                {
                    "type": st.sampled_from(["image", "other", 3]),
                    "width": st.one_of(st.integers(), st.none(), st.text(max_size=2)),
                    "height": st.one_of(st.integers(), st.none()),
                }
            ),
        ),
        max_size=4,
    )
)
def test_sidecar_decode_on_mutated_sidecars(changes) -> None:
    doc = {
        "id": ID,
        "media_type": {"kind": "image", "type": "png"},
        "byte_len": 5,
        "width": 7,
        "height": 11,
        "label": "pixel",
    }
    doc.update(changes)
    check_sidecar(json.dumps(doc).encode())


@FUZZ
@given(
    media=st.one_of(
        st.sampled_from(
            ["image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "application/pdf", "text/plain"]
        ),
        st.from_regex(r"[a-z0-9]{1,8}/[a-z0-9.+-]{1,12}", fullmatch=True),
    ),
    byte_len=st.integers(0, 2**63),
    width=st.one_of(st.none(), st.integers(0, 2**31)),
    height=st.one_of(st.none(), st.integers(0, 2**31)),
    label=st.one_of(st.none(), st.text(max_size=40)),
)
def test_sidecar_roundtrip(media: str, byte_len: int, width, height, label) -> None:
    _count()
    meta = sidecar.Metadata(ID, media, byte_len, width, height, label)
    assert sidecar.decode(meta.encode(), "rt") == meta


# -- ids and cutoffs -----------------------------------------------------------------------------
@FUZZ
@given(
    text=st.one_of(
        st.text(max_size=80),
        st.from_regex(r"(?i)(sha256:)?[0-9a-f]{0,70}", fullmatch=True),
        st.text(alphabet="0123456789abcdefABCDEF:sha256 \t\n./", max_size=70),
    )
)
@example(text="\u0661\u0662\u0663\u0664")
@example(text="\uff41\uff42\uff43\uff44")
@example(text="sha256:" + "A" * 64)
def test_parse_id_on_arbitrary_text(text: str) -> None:
    _count()
    try:
        query = parse_id(text)
    except UsageError as exc:
        assert "\n" not in exc.message
        return
    assert re.fullmatch(r"[0-9a-f]{4,64}", query.hex), query
    assert query.hex in text.lower()


@FUZZ
@given(hex_=st.from_regex(r"[0-9a-fA-F]{4,64}", fullmatch=True), scheme=st.sampled_from(["", "sha256:", "SHA256:"]))
def test_parse_id_accepts_every_valid_form(hex_: str, scheme: str) -> None:
    _count()
    assert parse_id(scheme + hex_).hex == hex_.lower()


@FUZZ
@given(
    text=st.one_of(
        st.text(max_size=40),
        st.from_regex(r"([0-9]{1,30}(ms|s|m|h|d|w)){1,3}", fullmatch=True),
        st.from_regex(r"[0-9]{1,40}", fullmatch=True),
        st.from_regex(
            r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2})?(Z|[+-][0-9]{2}:[0-9]{2})?", fullmatch=True
        ),
    ),
    option=st.sampled_from(["older", "before"]),
)
def test_cutoffs_are_usable_or_usage_errors(text: str, option: str) -> None:
    """What a command does with a cutoff: parse it, then show it (``iso_ms``)."""
    check_cutoff(text, option)


@pytest.mark.parametrize(
    "text,option",
    [
        ("9" * 5000 + "s", "older"),
        ("0001-01-01T00:00:00+14:00", "before"),
        ("99999999999999999999999", "before"),
        ("9" * 30 + "d", "older"),
    ],
)
def test_hostile_cutoffs(text: str, option: str) -> None:
    check_cutoff(text, option)


def check_cutoff(text: str, option: str) -> None:
    from lashctl.timefmt import cutoff_ms, iso_ms

    _count()
    now = 1_764_150_000_000
    try:
        cutoff = cutoff_ms(text if option == "older" else None, text if option == "before" else None, now)
    except UsageError:
        return
    assert isinstance(cutoff, int)
    iso_ms(cutoff)  # every command prints its cutoff


def test_fuzz_counts_report() -> None:
    if not EXAMPLES["n"]:
        pytest.skip("the fuzz tests were not run (deselected)")
    assert EXAMPLES["n"] >= 100, EXAMPLES  # hypothesis ran its examples, not one or two
    report(f"fuzz: {EXAMPLES['n']} hypothesis examples run")
