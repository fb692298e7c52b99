"""``python -m convert`` and the ``rconv`` script: the command line, loaded quietly."""

import os
import signal
import sys


def main() -> None:
    # Loading the command line takes most of a second. Until its own handlers exist, Ctrl-C
    # ends the process as the signal's default action, not with Python's KeyboardInterrupt
    # traceback: there is nothing to report yet.
    quiet = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if quiet:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    if "convert" in sys.argv[1:3]:  # `rconv [--debug] convert …`: a guess, only about when
        # The workers' fork server imports their modules on another core while this process
        # loads the command line (0.15 s) instead of after it: the first layer starts ~30 ms
        # sooner. A wrong guess costs an idle server or nothing (convert.forkserver).
        from convert.forkserver import start_early

        # The server leaves its socket's directory behind a process ended by a signal's
        # default action: until the command line's handlers exist, remove it first.
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(signum) is signal.SIG_DFL:
                signal.signal(signum, _end_loading)
        start_early()
    from convert.cli import main as cli_main

    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is _end_loading:
            signal.signal(signum, signal.SIG_DFL)
    if quiet:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    cli_main()


def _end_loading(signum: int, frame: object) -> None:
    """A signal while the command line loads, the fork server started: remove what the server
    left, then end as the signal's default action does."""
    from convert.forkserver import remove_server_dir

    remove_server_dir()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


if __name__ == "__main__":
    main()
