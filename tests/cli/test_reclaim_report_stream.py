"""reclaim's report is written to a pipe a chunk at a time, not gathered:
its bytes are those of the gathered listing (TSV and --json), whatever text
the rows hold (control characters escaped alike)."""

from __future__ import annotations

import json

import pytest
from conftest import png_bytes

from lashctl.render import _dumps, _plain

from .helpers import DAY, assert_ok, intent, now_ms, write_manifest

SESSIONS = ["plain", "tab\there", "caf\u00e9", "bell\u0007", "a\nnewline"]


@pytest.mark.parametrize("dry_run", [True, False])
def test_the_streamed_report_is_the_gathered_one_byte_for_byte(cli, store, put_blobs, dry_run):
    ids = put_blobs({f"f{n}.png": png_bytes(n + 1, 2) for n in range(len(SESSIONS))})
    now = now_ms()
    write_manifest(store, [intent(i, s, now - 3 * DAY + n) for n, (i, s) in enumerate(zip(ids, SESSIONS))])
    flags = ["--dry-run"] if dry_run else []

    as_json = cli("--json", "reclaim", "--older-than", "1h", *flags)
    assert_ok(as_json)
    report = json.loads(as_json.stdout)
    assert len(report["items"]) == len(ids)
    assert as_json.stdout == _dumps(report, None) + "\n"  # what the gathered listing writes

    if dry_run:  # the same store, as TSV
        as_tsv = cli("reclaim", "--older-than", "1h", *flags)
        assert_ok(as_tsv)
        expected = "".join(
            "\t".join(
                _plain(c)
                for c in (
                    i["id"],
                    i["action"],
                    i["byte_len"] if i["action"] == "reclaim" else None,
                    ", ".join(i["sessions"]) or None,
                    i["error"] or i["reason"],
                )
            )
            + "\n"
            for i in report["items"]
        )
        assert as_tsv.stdout == expected
