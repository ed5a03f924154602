"""The CoreDNS that ``tools/build.sh`` builds holds the plugins the cluster DNS's
Corefile uses and, beyond the few those import themselves, no other: ``tools/coredns``
picks them, as the stock build compiles every plugin and the cloud SDKs behind them.
(That the Corefile runs on it: ``test_dns_resolves.py``.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

from devenv import dns
from devenv.controlplane import coredns_binary

# Registered because the chosen plugins import them (cache, forward and kubernetes import
# metadata; forward imports debug and dnstap; kubernetes imports transfer). No Corefile
# here names them, and the build leaves them out of its directives.
PULLED_IN = frozenset({"metadata", "debug", "dnstap", "transfer"})


def _plugins_named(corefile: str) -> set[str]:
    """The plugins a Corefile of ``devenv.dns`` uses: the first word of each line of its
    one server block (a plugin's own block is indented deeper)."""
    return {line.split()[0] for line in corefile.splitlines()
            if line.startswith("    ") and not line.startswith("     ")
            and line.strip() != "}"}


def test_the_built_coredns_has_the_plugins_the_corefiles_use_and_no_others() -> None:
    used = (_plugins_named(dns.corefile())
            | _plugins_named(dns.corefile(kubeconfig=Path("/tmp/k"), bind="127.0.0.1")))
    assert {"kubernetes", "forward", "bind"} <= used
    listed = subprocess.run([str(coredns_binary()), "-plugins"], capture_output=True,
                            text=True, timeout=60, check=True).stdout.split()
    assert sorted(listed) == sorted(used | PULLED_IN)
