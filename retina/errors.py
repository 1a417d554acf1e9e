"""The one exception a user can cause and fix.

Every check on user input (data folders, CSVs, images, YAML, flags, paths) raises
`RetinaError` with a message that names the file, key or value and says how to fix it.
Command-line entry points print that message without a traceback and exit 2
(see `retina.cli.run_main`).
"""


class RetinaError(Exception):
    """A problem in the user's input or environment, with a message that says how to fix it."""
