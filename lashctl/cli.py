"""The Typer app: global options, command registration and the error funnel.

Every expected failure surfaces as a ``LashctlError`` and leaves here as one
line on stderr and its documented exit code (README, "Exit codes"); a traceback is shown
only with ``-v`` or ``LASHCTL_DEBUG=1``.
"""

import math
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperGroup

from lashctl import __version__, interrupted
from lashctl.commands import ENV_DEBUG, ENV_LOCK_TIMEOUT, ENV_MANIFEST, ENV_PROCESS_REGISTRY, ENV_STORE, AppState
from lashctl.errors import EXIT_FAILURE, EXIT_USAGE, LashctlError, UsageError
from lashctl.render import UI
from lashctl.text import say


def _debugging(ctx_state: Optional[AppState]) -> bool:
    return bool(os.environ.get(ENV_DEBUG)) or bool(ctx_state and ctx_state.ui.verbose)


# Each command lives in its own module, imported (and turned into a click
# command) only when it runs, is completed or is listed in help: a call to
# ``lashctl put`` pays for put alone. The order here is the order in --help.
COMMANDS = {
    "put": "put",
    "get": "get",
    "delete": "delete",
    "list-uncommitted": "list_uncommitted",
    "commit": "commit",
    "forget": "forget",
    "reclaim": "reclaim",
    "show": "show",
    "ls": "ls",
    "stats": "stats",
    "verify": "verify",
    "gc": "gc",
    "audit": "audit",
    "manifest": "manifest",
    "migrate": "migrate",
    "init": "init",
}


def _build_command(name: str) -> Any:
    import importlib

    from typer.main import get_command_from_info, get_group
    from typer.models import CommandInfo

    module_name = COMMANDS[name]
    module = importlib.import_module(f"lashctl.commands.{module_name}")
    target = getattr(module, module_name, None) or module.app
    if isinstance(target, typer.Typer):  # a group of subcommands
        group = get_group(target)
        group.name = name
        for sub in group.commands.values():
            _accept_global_options(_named_placeholders(sub))
        return group
    return _accept_global_options(
        _named_placeholders(
            get_command_from_info(
                CommandInfo(name=name, callback=target, epilog=getattr(module, "EPILOG", None)),
                pretty_exceptions_short=app.pretty_exceptions_short,
                rich_markup_mode=app.rich_markup_mode,
            )
        )
    )


def _late_global(name: str) -> Any:
    """Apply a global option given after the command to the state the group callback made."""

    def apply(ctx: Any, _param: Any, value: Any) -> None:
        state = ctx.find_object(AppState)
        if value is None or value is False:
            return
        if state is None:
            # Completing (the group callback has not run): completion of ids
            # still reads the store named on the line.
            ctx.meta[f"lashctl.late.{name}"] = value
            return
        if name == "store":
            state.store_root, state.store_named = _location(value), True
        elif name == "manifest":
            state.manifest_path, state.manifest_named = _location(value), True
        elif name == "lock_timeout":
            state.lock_timeout = _lock_timeout(value)
        elif name == "layout":
            state.layout = _layout(value)
        elif name == "process_registry":
            state.process_registry = _process_registry(value)
        else:
            setattr(state.ui, name, True)

    return apply


def _named_placeholders(command: Any) -> Any:
    """Arguments show only the placeholder they name (ID, PATH... | -).

    Typer would add a type (``<str>``) beside it in --help and brace a
    required one in the usage line (``{ID}``); neither tells a user more.
    """
    from typer._click.types import StringParamType
    from typer.core import TyperArgument

    class Placeholder(StringParamType):
        def get_metavar(self, param: Any, ctx: Any) -> str:
            return ""

    class NamedArgument(TyperArgument):
        def make_metavar(self, ctx: Any, *, usage: bool = False) -> str:
            var = self.metavar or (self.name or "").upper()
            return f"[{var}]" if usage and not self.required else var

    for param in command.params:
        if type(param) is TyperArgument and param.metavar is not None:
            param.__class__ = NamedArgument
            if isinstance(param.type, StringParamType):
                param.type = Placeholder()
    return command


def _accept_global_options(command: Any) -> Any:
    """Every global option is accepted after the command too (as restic does).

    They are real options of each command, so the parser knows which take a
    value: ``put --label -q`` is still a label. Hidden from each command's
    help: the top-level help lists them once.
    """
    from typer.core import TyperOption

    taken = {opt for param in command.params for opt in getattr(param, "opts", ())}
    specs = [
        (["--store"], "store", str, False),
        (["--manifest"], "manifest", str, False),
        (["--json"], "json", None, True),
        (["--quiet", "-q"], "quiet", None, True),
        (["--verbose", "-v"], "verbose", None, True),
        (["--lock-timeout"], "lock_timeout", float, False),
        (["--full-ids"], "full_ids", None, True),
        (["--layout"], "layout", str, False),
        (["--process-registry"], "process_registry", str, False),
    ]
    for decls, name, kind, is_flag in specs:
        decls = [d for d in decls if d not in taken]
        if not decls:
            continue
        command.params.append(
            TyperOption(
                param_decls=[f"late_{name}", *decls],
                type=kind,
                is_flag=is_flag,
                default=False if is_flag else None,
                expose_value=False,
                hidden=True,
                callback=_late_global(name),
            )
        )
    return command


class LashctlGroup(TyperGroup):
    """Loads commands lazily; funnels errors into one-line messages and exit codes."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            self.commands[cmd_name] = _build_command(cmd_name)
        return self.commands.get(cmd_name)

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        """Parsing, where eager options such as --help and --version answer:
        Ctrl-C there is the one line and exit 130 too (Typer would exit
        130 without a word)."""
        try:
            return super().make_context(*args, **kwargs)
        except KeyboardInterrupt as exc:
            line, code = interrupted(exc)
            say(line)
            raise SystemExit(code) from None  # not typer.Exit: completion parses outside Typer's handler

    def invoke(self, ctx: Any) -> Any:
        """Run the command; with --metrics-file, write its metrics however it ended."""
        from typer._click.exceptions import ClickException

        code = 0
        try:
            return self._invoke(ctx)
        except (ClickException, typer.Exit) as exc:
            code = exc.exit_code
            raise
        except typer.Abort:
            code = 130
            raise
        except BaseException:  # what the funnel passes on
            code = EXIT_FAILURE
            raise
        finally:
            state = ctx.find_object(AppState)
            if state is not None and state.metrics is not None:
                state.metrics.finish(state, code)

    def _invoke(self, ctx: Any) -> Any:
        from typer._click.exceptions import ClickException

        try:
            return super().invoke(ctx)
        except (ClickException, typer.Exit, typer.Abort):
            raise  # usage errors are formatted in main()
        except KeyboardInterrupt as exc:
            # Ctrl-C, SIGTERM or SIGHUP (lashctl.Terminated): one line saying
            # what was kept, exit 128 + the signal (130, 143, 129). Every write
            # stages and renames, and staging files are removed on the way
            # out, so no file is left half-written; put says more.
            line, code = interrupted(exc)
            state = ctx.find_object(AppState)
            if state is not None and state.ui.json and not state.ui.wrote_data:
                try:  # under --json every failure is one document, an interrupt too
                    state.ui.emit_json(
                        {"error": line.removeprefix("lashctl: "), "exit_code": code, **state.run_fields()}
                    )
                except OSError:
                    _quiet_stdout()
            say(line)
            raise typer.Exit(code)
        except LashctlError as exc:
            self._fail(ctx, exc.message, exc.exit_code, exc)
        except BrokenPipeError:
            # The reader went away (``| head``): an I/O error, said once.
            _quiet_stdout()
            UI.error(READER_GONE)
            raise typer.Exit(EXIT_FAILURE)
        except OSError as exc:
            where = f" {exc.filename}" if exc.filename else ""
            self._fail(ctx, f"I/O error{where}: {exc.strerror or exc}", EXIT_FAILURE, exc)
        except Exception as exc:  # noqa: BLE001 - a bug: still one line unless debugging
            self._fail(ctx, f"unexpected {type(exc).__name__}: {exc} (run with -v for a traceback)", EXIT_FAILURE, exc)

    @staticmethod
    def _fail(ctx: Any, message: str, code: int, exc: BaseException) -> None:
        state = ctx.find_object(AppState)
        if _debugging(state):
            import traceback

            traceback.print_exception(exc, file=sys.stderr)
        if state is not None and state.ui.json and not state.ui.wrote_data:
            # A cron job logging --json still gets one document saying what went wrong.
            try:
                state.ui.emit_json({"error": message, "exit_code": code, **state.run_fields()})
            except OSError:
                _quiet_stdout()  # stdout itself failed (a full device): the line below says why
        UI.error(message)
        raise typer.Exit(code)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # type: ignore[override]
        """Click's usage errors become one line too (plus where to find help)."""
        from typer._click import exceptions as click_exceptions

        if os.environ.get("_LASHCTL_COMPLETE") or any(a.endswith("-completion") for a in sys.argv[1:]):
            from lashctl.completion import register

            register()
        import lashctl

        lashctl.ARGV = list(sys.argv[1:] if args is None else args)  # the audit log keeps it
        try:
            code = super().main(
                args=args, prog_name=prog_name or "lashctl", complete_var=complete_var, standalone_mode=False, **extra
            )
        except click_exceptions.NoArgsIsHelpError as exc:
            exc.show()  # the help text, on stderr
            code = EXIT_USAGE
        except click_exceptions.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx is not None else "lashctl"
            message = f"{exc.format_message()} (see '{command} --help')"
            code = exc.exit_code if exc.exit_code else EXIT_USAGE
            _click_failure_json(exc.ctx, message, code, sys.argv[1:] if args is None else list(args))
            UI.error(message)
        except click_exceptions.ClickException as exc:
            _click_failure_json(None, exc.format_message(), exc.exit_code, sys.argv[1:] if args is None else list(args))
            UI.error(exc.format_message())
            code = exc.exit_code
        except typer.Abort:
            UI.error("aborted")
            code = 130
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


def _click_failure_json(ctx: Any, message: str, code: int, args: list[str]) -> None:
    """Under --json, a failure click reports while it parses (an unknown
    option, a bad value, a missing argument) prints the one JSON object every
    other failure prints. Click may stop before it has read --json, so the
    command line is read for it here."""
    state = ctx.find_object(AppState) if ctx is not None else None
    if state is not None and state.ui.wrote_data:
        return
    if not (state is not None and state.ui.json) and not _asks_for_json(ctx, args):
        return
    if state is None:
        state = AppState(
            store_root=_argv_location(args, "--store", ENV_STORE) or _default_store(),
            manifest_path=_argv_location(args, "--manifest", ENV_MANIFEST),
            lock_timeout=0.0,
            ui=UI(json_output=True),
        )
    try:
        UI(json_output=True).emit_json({"error": message, "exit_code": code, **state.run_fields()})
    except OSError:
        _quiet_stdout()  # stdout itself failed: the error line on stderr still says what went wrong


def _asks_for_json(ctx: Any, args: list[str]) -> bool:
    """Whether ``--json`` is on the command line as the option: before any
    ``--``, and not the value of an option that takes one (``--label --json``)."""
    takes_value = {"--store", "--manifest", "--lock-timeout", "--layout"}
    while ctx is not None:
        for param in ctx.command.params:
            if getattr(param, "param_type_name", "") == "option" and not param.is_flag and not param.count:
                takes_value.update(param.opts, param.secondary_opts)
        ctx = ctx.parent
    tokens = iter(args)
    for token in tokens:
        if token == "--":
            return False
        if token == "--json":
            return True
        if token in takes_value:
            next(tokens, None)
    return False


def _argv_location(args: list[str], option: str, env: str) -> Path | str | None:
    """The last value an option takes on the command line (before ``--``), else its variable's."""
    found = os.environ.get(env) or None
    tokens = iter(args)
    for token in tokens:
        if token == "--":
            break
        if token == option:
            found = next(tokens, found)
        elif token.startswith(option + "="):
            found = token.partition("=")[2]
    return _location(found) if found is not None else None


def _default_store() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("lashctl"))


app = typer.Typer(
    cls=LashctlGroup,
    name="lashctl",
    help="Operate a lash attachment store: put, get, delete, commit and reclaim blobs.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _location(value: str | Path) -> Path | str:
    """A store or manifest location: a URL (``s3://``, ``postgresql://``) stays
    text, anything else is a local path."""
    from lashctl.backends import is_url

    text = str(value)
    return text if is_url(text) else Path(text)


LAYOUTS = ("auto", "sidecars", "bare")


def _layout(value: str | None) -> str | None:
    if value is None:
        return None
    if value not in LAYOUTS:
        raise typer.BadParameter(f"'{value}' is not one of {', '.join(LAYOUTS)}", param_hint="--layout")
    return value


def _process_registry(value: str | None) -> str | None:
    if value is None:
        return None  # not given: nothing to import (completion pays start-up on every TAB)
    from lashctl.backends import process_registry

    try:
        return process_registry(value)
    except UsageError as exc:
        raise typer.BadParameter(
            exc.message.removeprefix("--process-registry "), param_hint="--process-registry"
        ) from None


def _lock_timeout(value: float) -> float:
    # Click's range check lets NaN through (every comparison with it is
    # false), and NaN or inf would make the lock deadline unreachable: a wait
    # for ever instead of exit 75.
    if not math.isfinite(value) or value < 0:
        raise typer.BadParameter(f"{value} is not a finite, non-negative number of seconds")
    return value


def _version(value: bool) -> None:
    if value:
        print(f"lashctl {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    store: Annotated[
        Optional[str],
        typer.Option(
            "--store",
            envvar=ENV_STORE,
            metavar="PATH|URL",
            help="Store root: a directory or s3://BUCKET/PREFIX (default: the platform's user data dir for lashctl).",
            show_default=False,
        ),
    ] = None,
    manifest: Annotated[
        Optional[str],
        typer.Option(
            "--manifest",
            envvar=ENV_MANIFEST,
            metavar="PATH|URL",
            help="Manifest: a JSON-lines file, a postgresql:// URL or lash-sqlite:DIR (lash's SQLite "
            "session databases) (default: <store>/manifest.jsonl).",
        ),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Machine output: one JSON document on stdout.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No summaries or warnings on stderr.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="More detail; tracebacks on errors.")] = False,
    full_ids: Annotated[
        bool, typer.Option("--full-ids", help="Tables on a terminal show whole ids, never a shortened prefix.")
    ] = False,
    lock_timeout: Annotated[
        float,
        typer.Option(
            "--lock-timeout",
            envvar=ENV_LOCK_TIMEOUT,
            metavar="SECONDS",
            callback=_lock_timeout,
            help="How long to wait for the manifest lock before exit 75.",
        ),
    ] = 30.0,
    layout: Annotated[
        Optional[str],
        typer.Option(
            "--layout",
            envvar="LASHCTL_LAYOUT",
            metavar="auto|sidecars|bare",
            callback=_layout,
            help="Blob layout: sidecars beside blobs (lash-core 0.1), bare (later lash), or auto-detect.",
        ),
    ] = None,
    process_registry: Annotated[
        Optional[str],
        typer.Option(
            "--process-registry",
            envvar=ENV_PROCESS_REGISTRY,
            metavar="SOURCE",
            callback=_process_registry,
            help="Where lash's process registry lives, so that intents of processes gone from it are "
            "reclaimed: table (lash_processes in the PostgreSQL manifest's database) or "
            "table:[SCHEMA.]NAME; for a lash-sqlite: manifest, the PATH of lash's SQLite "
            "process registry file. Without it process-owned intents are kept, as lash keeps them.",
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Operate a lash attachment store: a content-addressed blob store with a
    write-ahead manifest of intents and commits.

    Exit codes: 0 ok, 1 failure, 2 usage, 3 not found, 4 refused, 5 partial,
    65 corrupt data, 69 server unavailable, 75 manifest locked, 77 access
    refused, 129/130/143 stopped by SIGHUP/Ctrl-C/SIGTERM.
    """
    empty_store, empty_manifest = store is not None and not store.strip(), manifest is not None and not manifest.strip()
    store_named = store is not None
    store = _location(store) if store is not None else None
    manifest = _location(manifest) if manifest is not None else None
    if store is None:
        store = _default_store()
    ctx.obj = AppState(
        store_root=store,
        manifest_path=manifest,
        lock_timeout=lock_timeout,
        layout=layout,
        ui=UI(json_output=json_output, quiet=quiet, verbose=verbose, full_ids=full_ids),
        store_named=store_named,
        manifest_named=manifest is not None,
        process_registry=process_registry,
    )
    _refuse_empty_locations(empty_store, empty_manifest)


def _refuse_empty_locations(empty_store: bool, empty_manifest: bool) -> None:
    """An empty location (``--store ''``, or ``LASHCTL_STORE=`` left unset in
    a crontab) is a mistake, never the current directory or the default."""
    for variable, option in ((ENV_STORE, "--store"), (ENV_MANIFEST, "--manifest")):
        given = os.environ.get(variable)
        if given is not None and not given.strip() and option not in sys.argv[1:]:
            raise UsageError(f"{variable} is empty: name a store or manifest, or unset it")
    if empty_store or empty_manifest:
        raise UsageError(f"{'--store' if empty_store else '--manifest'} is empty: name a directory, file or URL")


def main(prog_name: str = "lashctl") -> None:
    """Console-script entry point."""
    if sys.stdout is None:
        # Started with descriptor 1 closed (">&-"): data would have nowhere to
        # go, and a file the command opens could take that descriptor.
        if sys.stderr is not None:
            sys.stderr.write(
                "lashctl: error: standard output is closed: give it somewhere to go (>/dev/null to discard it)\n"
            )
        raise SystemExit(EXIT_FAILURE)
    _guard_closed_streams()
    for stream in (sys.stdout, sys.stderr):
        try:
            # File names that are not UTF-8 are written back as the bytes they were.
            stream.reconfigure(errors="surrogateescape")
        except (AttributeError, ValueError):
            pass
    try:
        try:
            app(prog_name=prog_name)
        finally:
            # What is still buffered goes now, while a failure can be said
            # (at exit it would be a traceback and exit 120).
            if not sys.stdout.closed:
                sys.stdout.flush()
    except BrokenPipeError:
        _quiet_stdout()
        UI.error(READER_GONE)
        raise SystemExit(EXIT_FAILURE) from None
    except OSError as exc:  # stdout refused a write (a full device) outside a command: --help, --version
        _quiet_stdout()
        UI.error(f"I/O error: cannot write to standard output: {exc.strerror or exc}")
        raise SystemExit(EXIT_FAILURE) from None


def _guard_closed_streams() -> None:
    """Started with standard input or error closed (``<&-``, ``2>&-``): the
    descriptor is reopened on /dev/null, so that no file the command opens
    takes its number. Messages then go nowhere (never onto stdout, the data);
    reading standard input is a usage error."""
    closed = {fd for fd in (0, 2) if not _is_open(fd)}
    for fd in sorted(closed):
        got = os.open(os.devnull, os.O_RDWR)
        if got != fd:
            os.dup2(got, fd)
            os.close(got)
    if sys.stderr is None:
        sys.stderr = open(2, "w", closefd=False)
    if sys.stdin is None:
        sys.stdin = _ClosedInput()


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


class _ClosedInput:
    """``sys.stdin`` when the command was started without one."""

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str):
        raise UsageError("standard input is closed: give the input on a pipe or as a file")


READER_GONE = "I/O error: standard output was closed before all of it was written (the reader went away)"


def _quiet_stdout() -> None:
    """Point stdout at /dev/null: what is still buffered for a full or
    closed output is dropped at exit, not reported a second time."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, AttributeError, ValueError):
        pass
