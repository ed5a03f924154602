"""The one error of every sender."""


class DeliveryError(Exception):
    """A notification was not delivered.

    Its message names the channel and what went wrong (a status code, a refused
    connection), never the target: webhook URLs, tokens and keys are secrets.
    """
