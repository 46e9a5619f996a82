"""The one exception type users see.

Every problem caused by the user's input (a missing folder, a file name that does not parse, a
config typo, a NaN loss) is raised as :class:`DmireidError` with a one-line message that names the
file or setting at fault. The CLI prints it as ``dmireid: error: <message>`` and exits with
status 2, without a traceback.
"""


class DmireidError(Exception):
    """A user-facing error whose ``str()`` is one line naming the file or setting at fault."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
