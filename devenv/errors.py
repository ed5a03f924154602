"""The one base of every error of the development environment."""


class DevenvError(RuntimeError):
    """A part of the development environment failed; the message says which and why."""
