"""lashctl: the operator's tool for a lash attachment store."""

__version__ = "0.2.0"
NOTHING_LEFT = "nothing half-written was left"  # what an interrupt says where nothing else was kept
ARGV: list[str] | None = None  # the command line (set by the CLI), for the audit log


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP (a job runner stopping the command, a closed
    terminal), raised in the main thread as Ctrl-C raises KeyboardInterrupt:
    every path that cleans up after Ctrl-C (staging files removed, locks
    released, put's report of what was stored) runs for these too."""

    def __init__(self, signum: int, *args: object) -> None:
        super().__init__(*args)
        self.signum = signum


def interruption(exc: KeyboardInterrupt) -> str:
    """How the line an interrupt leaves begins: ``interrupted`` (Ctrl-C) or
    ``interrupted by SIGTERM``."""
    import signal

    signum = getattr(exc, "signum", None)
    return "interrupted" if signum is None else f"interrupted by {signal.Signals(signum).name}"


def interrupted(exc: KeyboardInterrupt) -> tuple[str, int]:
    """The one line on stderr (what was kept) and the exit code, 128 + the
    signal's number (130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP), that
    an interrupt ends a command with."""
    import signal

    message = exc.args[0] if exc.args else f"{interruption(exc)}; {NOTHING_LEFT}"
    return f"lashctl: {message}", 128 + getattr(exc, "signum", signal.SIGINT)


_ending = False  # whether a SIGTERM or SIGHUP is already being handled

# Start-up (importing Typer and the command, building it, parsing the line)
# makes tens of thousands of objects (modules, classes, functions: mostly in
# reference cycles) that live as long as the process. The cyclic collector
# would walk them again and again while they are made, and tear them down one
# by one at exit: about 20 ms of a put's 90 ms of CPU. When ``main`` is the
# program (the console script, ``python -m lashctl``), it raises the
# collector's threshold until the command starts (``start_collecting``),
# which freezes what start-up made (``gc.freeze``: never walked again), and
# freezes the rest when the command is over: the process ends there, and its
# memory goes back whole. A caller that goes on after ``main`` is left alone.
START_UP_GC_THRESHOLD = 100_000
_thresholds: tuple[int, ...] | None = None  # the collector's thresholds while start-up runs


def _is_program() -> bool:
    """Whether ``main`` runs as the program: the ``__main__`` module (the
    console script, ``lashctl/__main__.py``) imported it to call it."""
    import sys

    return getattr(sys.modules.get("__main__"), "main", None) is main


def _collect_less() -> None:
    """Raise the collector's first threshold for start-up (``start_collecting`` restores it)."""
    global _thresholds
    import gc

    if _thresholds is None:
        _thresholds = gc.get_threshold()
        if _thresholds[0]:  # 0: collection is switched off; left as it is
            gc.set_threshold(max(_thresholds[0], START_UP_GC_THRESHOLD), *_thresholds[1:])


def start_collecting() -> None:
    """The command's own work begins: what start-up made is frozen, and the
    collector's thresholds are as they were before ``main``. Does nothing
    unless ``main`` runs as the program (a test invoking the app)."""
    global _thresholds
    if _thresholds is not None:
        import gc

        gc.freeze()
        gc.set_threshold(*_thresholds)
        _thresholds = None


def _raise_terminated(signum: int, _frame: object) -> None:
    global _ending
    if _ending:
        return  # a second signal must not cut short the cleanup of the first
    _ending = True
    raise Terminated(signum)


def _handle_job_signals() -> dict:
    """SIGTERM and SIGHUP end a command the way Ctrl-C does (``Terminated``).
    A signal the caller set to be ignored (``nohup``) stays ignored. Returns
    the handlers replaced, for ``_restore_signals``."""
    import signal

    replaced = {}
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is signal.SIG_DFL:
            replaced[signum] = signal.signal(signum, _raise_terminated)
    return replaced


def _restore_signals(replaced: dict) -> None:
    """Put back what ``_handle_job_signals`` replaced (for a caller that goes on after ``main``)."""
    global _ending
    import signal

    for signum, handler in replaced.items():
        signal.signal(signum, handler)
    _ending = False


def main(prog_name: str = "lashctl") -> None:
    """Console-script entry point. A TAB (``_LASHCTL_COMPLETE`` set) is
    answered by ``lashctl.completion.answer`` before anything imports
    Typer; anything else loads and runs the command-line app. Both run
    inside this guard: Ctrl-C (or SIGTERM, SIGHUP) while the app loads or
    builds its commands says the one line (and exit code) it says during a
    command, never a traceback."""
    replaced: dict = {}
    program = _is_program()
    if program:
        _collect_less()
    try:
        replaced = _handle_job_signals()
        import os

        if os.environ.get("_LASHCTL_COMPLETE"):
            # A TAB: answered from the completion table, without loading Typer or the commands.
            from lashctl.completion import answer

            code = answer()
            if code is not None:
                raise SystemExit(code)
        from lashctl.cli import main as run

        run(prog_name)  # a command's own interrupt report ends in SystemExit(128 + signal), not here
    except KeyboardInterrupt as exc:
        import sys

        line, code = interrupted(exc)
        if sys.stderr is not None:
            from lashctl.text import say

            say(line)
        raise SystemExit(code) from None
    finally:
        start_collecting()  # (a run that ended before its command did: --help, a usage error)
        if program:
            import gc

            gc.freeze()  # the process ends here: nothing is torn down one by one
        _restore_signals(replaced)
