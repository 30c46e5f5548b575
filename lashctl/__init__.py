"""lashctl: the operator's tool for a lash attachment store."""

__version__ = "0.1.0"
INTERRUPTED = "interrupted; nothing half-written was left"  # what Ctrl-C says where nothing else was kept


def main(prog_name: str = "lashctl") -> None:
    """Console-script entry point. The command-line app is loaded and run
    inside this guard: Ctrl-C while it loads or builds its commands says the
    one line (and exit 130) it says during a command, never a traceback."""
    try:
        from lashctl.cli import main as run

        run(prog_name)  # a command's own Ctrl-C report ends in SystemExit(130), not here
    except KeyboardInterrupt:
        import sys

        if sys.stderr is not None:
            sys.stderr.write(f"lashctl: {INTERRUPTED}\n")
        raise SystemExit(130) from None
