"""The ``metamapper`` command: the image's entrypoint and a small admin CLI.

Process commands (``worker``, ``scheduler``, ``flower``, ``operator``, ``shell``) replace this
process with the real program; any other unknown command is run as given, so the
image can run ``bash`` or ``celery ...`` directly.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta

import click

from metamapper import entrypoint

_PASS_THROUGH = {
    "ignore_unknown_options": True,
    "allow_extra_args": True,
    "help_option_names": [],
}


#: The commands of :mod:`metamapper.admin`, loaded when used.
ADMIN_COMMANDS = ("metastore", "runs", "revisions", "inspect")


class _Commands(click.Group):
    """The command group, with :mod:`metamapper.admin`'s commands loaded only when used.

    Where the worker's database drivers are not installed (the operator image), each of
    them is a command that says so, instead of ``metamapper --help`` failing.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *ADMIN_COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in ADMIN_COMMANDS:
            return super().get_command(ctx, cmd_name)
        try:
            from metamapper import admin
        except ImportError as missing:
            return _unavailable(cmd_name, missing.name or str(missing))
        return admin.COMMANDS[cmd_name]


def _unavailable(name: str, module: str) -> click.Command:
    def refuse(args: tuple[str, ...]) -> None:
        raise click.ClickException(f"{name} needs the worker image: the Python module "
                                   f"{module} is not installed here")

    return click.Command(name, callback=refuse, context_settings=_PASS_THROUGH,
                         add_help_option=False,
                         params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)],
                         help=f"(the worker image's: {module} is not installed here)")


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Metamapper's worker image: Celery processes, metastore and revisioner admin."""


def _exec_command(
    name: str, build: Callable[[Sequence[str]], list[str]], help_text: str
) -> None:
    """A command that passes all its arguments on to the program it replaces us with."""

    @cli.command(name, context_settings=_PASS_THROUGH, help=help_text, add_help_option=False)
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def command(args: tuple[str, ...]) -> None:
        entrypoint.exec_command(build(args))


_exec_command("worker", entrypoint.worker_argv, "Run a Celery worker (args go to celery worker).")
_exec_command("scheduler", entrypoint.scheduler_argv,
              "Run celery beat (under single-beat when SINGLE_BEAT_REDIS_SERVER is set).")
_exec_command("flower", entrypoint.flower_argv, "Run Flower for the app's broker.")
_exec_command("operator", entrypoint.operator_argv, "Run the Kubernetes operator.")
_exec_command("shell", entrypoint.shell_argv, "A Python shell with the Celery app loaded.")


@cli.command()
@click.option("--check", "checks", multiple=True, type=click.Choice(["broker", "metastore",
              "beat", "workers"]), help="Run only these checks (repeatable). Default: all.")
@click.option("--timeout", default=5.0, show_default=True, help="Seconds per network check.")
@click.option("--max-beat-age", default=180, show_default=True,
              help="Seconds since the last heartbeat before beat counts as down.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def health(checks: tuple[str, ...], timeout: float, max_beat_age: int, as_json: bool) -> None:
    """Check broker, metastore, beat and workers; exit 1 if any selected check fails."""
    from metamapper.health import CHECKS, run_checks

    results = run_checks(checks or CHECKS, timeout, timedelta(seconds=max_beat_age))
    if as_json:
        click.echo(json.dumps([r.__dict__ for r in results], indent=2))
    else:
        for r in results:
            click.echo(f"{r.name:<10} {'ok' if r.ok else 'FAIL':<5} {r.detail}")
    sys.exit(0 if all(r.ok for r in results) else 1)


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    known = cli.list_commands(click.Context(cli))
    if args and not args[0].startswith("-") and args[0] not in known:
        entrypoint.exec_command(args)
    cli.main(args=args, prog_name="metamapper")
