"""``python -m convert`` and the ``rconv`` script: the command line, loaded quietly."""

import signal
import sys


def main() -> None:
    # Loading the command line takes most of a second. Until its own handlers exist, Ctrl-C
    # ends the process as the signal's default action, not with Python's KeyboardInterrupt
    # traceback: nothing has started yet, so there is nothing to clean up or report.
    quiet = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if quiet:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    if "convert" in sys.argv[1:3]:  # `rconv [--debug] convert …`: a guess, only about when
        # The workers' fork server imports their modules on another core while this process
        # loads the command line (0.15 s) instead of after it: the first layer starts ~30 ms
        # sooner. A wrong guess costs an idle server or nothing (convert.forkserver).
        from convert.forkserver import start_early

        start_early()
    from convert.cli import main as cli_main

    if quiet:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    cli_main()


if __name__ == "__main__":
    main()
