"""The Typer app: global options, command registration and the error funnel.

Every expected failure surfaces as a ``LashctlError`` and leaves here as one
line on stderr and its documented exit code (DESIGN §5); a traceback is shown
only with ``-v`` or ``LASHCTL_DEBUG=1``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperGroup

from lashctl import __version__
from lashctl.commands import (
    ENV_DEBUG,
    ENV_LOCK_TIMEOUT,
    ENV_MANIFEST,
    ENV_STORE,
    AppState,
    commit,
    delete,
    gc,
    get,
    list_uncommitted,
    ls,
    manifest,
    put,
    reclaim,
    show,
    stats,
    verify,
)
from lashctl.errors import EXIT_FAILURE, EXIT_USAGE, LashctlError
from lashctl.render import UI


def _debugging(ctx_state: Optional[AppState]) -> bool:
    return bool(os.environ.get(ENV_DEBUG)) or bool(ctx_state and ctx_state.ui.verbose)


class LashctlGroup(TyperGroup):
    """Funnels errors into one-line messages and exit codes."""

    def invoke(self, ctx: Any) -> Any:
        from typer._click.exceptions import ClickException

        try:
            return super().invoke(ctx)
        except (ClickException, typer.Exit, typer.Abort, KeyboardInterrupt):
            raise  # usage errors are formatted in main()
        except LashctlError as exc:
            self._fail(ctx, exc.message, exc.exit_code, exc)
        except BrokenPipeError:
            # The reader went away (``| head``): stop quietly.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise typer.Exit(EXIT_FAILURE)
        except OSError as exc:
            where = f" {exc.filename}" if exc.filename else ""
            self._fail(ctx, f"I/O error{where}: {exc.strerror or exc}", EXIT_FAILURE, exc)
        except Exception as exc:  # a bug: still one line unless debugging
            self._fail(ctx, f"unexpected {type(exc).__name__}: {exc} (run with -v for a traceback)",
                       EXIT_FAILURE, exc)

    @staticmethod
    def _fail(ctx: Any, message: str, code: int, exc: BaseException) -> None:
        state = ctx.find_object(AppState)
        if _debugging(state):
            import traceback

            traceback.print_exception(exc, file=sys.stderr)
        UI.error(message)
        raise typer.Exit(code)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # type: ignore[override]
        """Click's usage errors become one line too (plus where to find help)."""
        from typer._click import exceptions as click_exceptions

        try:
            code = super().main(args=args, prog_name=prog_name or "lashctl", complete_var=complete_var,
                                standalone_mode=False, **extra)
        except click_exceptions.NoArgsIsHelpError as exc:
            exc.show()  # the help text, on stderr
            code = EXIT_USAGE
        except click_exceptions.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx is not None else "lashctl"
            UI.error(f"{exc.format_message()} (see '{command} --help')")
            code = exc.exit_code if exc.exit_code else EXIT_USAGE
        except click_exceptions.ClickException as exc:
            UI.error(exc.format_message())
            code = exc.exit_code
        except typer.Abort:
            UI.error("aborted")
            code = 130
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=LashctlGroup,
    name="lashctl",
    help="Operate a lash attachment store: put, get, delete, commit and reclaim blobs.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"lashctl {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    store: Annotated[
        Optional[Path],
        typer.Option("--store", envvar=ENV_STORE, metavar="PATH",
                     help="Store root (default: the platform's user data dir for lashctl).",
                     show_default=False),
    ] = None,
    manifest: Annotated[
        Optional[Path],
        typer.Option("--manifest", envvar=ENV_MANIFEST, metavar="PATH",
                     help="Manifest file (default: <store>/manifest.jsonl)."),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Machine output: one JSON document on stdout.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No summaries or warnings on stderr.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="More detail; tracebacks on errors.")] = False,
    lock_timeout: Annotated[
        float,
        typer.Option("--lock-timeout", envvar=ENV_LOCK_TIMEOUT, min=0, metavar="SECONDS",
                     help="How long to wait for the manifest lock before exit 75."),
    ] = 30.0,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Operate a lash attachment store: a content-addressed blob store with a
    write-ahead manifest of intents and commits.

    Exit codes: 0 ok, 1 failure, 2 usage, 3 not found, 4 refused, 5 partial,
    65 corrupt data, 75 manifest locked.
    """
    if store is None:
        import platformdirs

        store = Path(platformdirs.user_data_dir("lashctl"))
    ctx.obj = AppState(
        store_root=store,
        manifest_path=manifest,
        lock_timeout=lock_timeout,
        ui=UI(json_output=json_output, quiet=quiet, verbose=verbose),
    )


app.command("put")(put.put)
app.command("get")(get.get)
app.command("delete")(delete.delete)
app.command("list-uncommitted")(list_uncommitted.list_uncommitted)
app.command("commit")(commit.commit)
app.command("reclaim")(reclaim.reclaim)
app.command("show")(show.show)
app.command("ls")(ls.ls)
app.command("stats")(stats.stats)
app.command("verify")(verify.verify)
app.command("gc")(gc.gc)
app.add_typer(manifest.app)


def main(prog_name: str = "lashctl") -> None:
    """Console-script entry point."""
    for stream in (sys.stdout, sys.stderr):
        try:
            # File names that are not UTF-8 are written back as the bytes they were.
            stream.reconfigure(errors="surrogateescape")
        except (AttributeError, ValueError):
            pass
    app(prog_name=prog_name)
