"""``lashctl init``: make a store and record its layout."""

import typer

from lashctl.commands import JsonFlag, app_state

EPILOG = """Examples:

    lashctl init --layout bare
    lashctl --store s3://bucket/lash init --layout sidecars

Exit codes: 0 made (or already so); 2 usage error; 4 refused: the store records another layout; 69 server unavailable; 77 access denied."""


def init(ctx: typer.Context, json_flag: JsonFlag = False) -> None:
    """Make a store (its directories) and record its layout, given with --layout.

    The layout is written to lashctl-layout at the store's root (or prefix),
    outside sha256/, where lash never looks: bare for the stores lash writes
    today (no sidecars), sidecars for lash-core 0.1.0-alpha.85's. Without
    --layout, a store that already holds blobs records what its blobs show,
    an empty one sidecars. Every later command follows the record unless
    --layout names another.
    """
    from lashctl.errors import Refused

    state = app_state(ctx, json_flag)
    store = state.store(create=True)
    recorded = store.blobs.recorded_layout()
    layout = store.layout  # --layout, else the record, else what the blobs show
    if recorded is not None and recorded != layout:
        raise Refused(
            f"store {store.blobs.name} records layout {recorded}: refusing to record {layout} "
            f"(edit {store.blobs.name}/lashctl-layout by hand if the store really changed)"
        )
    store.blobs.ensure_writable_layout()
    # Exclusive: where another init recorded another layout meanwhile, Refused.
    made = recorded is None and store.blobs.record_layout(layout)
    state.ui.records(
        ["store", "layout"], [[store.blobs.name, layout]], {**state.run_fields(), "layout": layout, "recorded": made}
    )
    what = "made, layout recorded" if made else "already records it"
    state.ui.info(f"{store.blobs.name}: {what}: {layout}")
