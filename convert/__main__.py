"""``python -m convert`` and the ``rconv`` script: the command line, loaded quietly."""

import signal


def main() -> None:
    # Loading the command line takes most of a second. Until its own handlers exist, Ctrl-C
    # ends the process as the signal's default action, not with Python's KeyboardInterrupt
    # traceback: nothing has started yet, so there is nothing to clean up or report.
    quiet = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if quiet:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    from convert.cli import main as cli_main

    if quiet:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    cli_main()


if __name__ == "__main__":
    main()
