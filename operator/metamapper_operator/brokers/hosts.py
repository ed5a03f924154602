"""Which of a broker's names the operator dials: the one in the fleet's namespace, or the
one as written.

``references.resolve`` names a short host in the fleet's namespace (``redis`` becomes
``redis.<namespace>.svc``) and keeps the URL as written beside it. A short name need not
be a Service: the node's search domains or ``/etc/hosts`` may resolve it, and then only
the name as written does. :func:`dialled` asks the resolver (``getaddrinfo``, blocking:
call it in a thread) and keeps the namespaced name unless it does not resolve while the
name as written does.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Callable

from metamapper_operator.references import BrokerAccess
from metamapper_urls import hosts_of

Resolves = Callable[[str], bool]

# The answers that say a name does not exist. Any other failure (EAI_AGAIN: the resolver
# did not answer) counts as resolving: the choice stays with the probe it builds, and a
# passing failure must not switch a fleet to the name as written.
_NO_SUCH_NAME = frozenset(code for code in (socket.EAI_NONAME,
                                             getattr(socket, "EAI_NODATA", None))
                          if code is not None)


def resolves(host: str) -> bool:
    """Whether ``host`` exists for the resolver (a bare IPv6 address is written in
    brackets)."""
    try:
        socket.getaddrinfo(host.strip("[]"), None)
    except UnicodeError:
        return False
    except socket.gaierror as err:
        return err.errno not in _NO_SUCH_NAME
    return True


def _chosen(seen: str | None, written: str | None, known: Resolves) -> str | None:
    if seen is None or written is None or all(known(host) for host in hosts_of(seen)):
        return seen
    return written if all(known(host) for host in hosts_of(written)) else seen


def dialled(access: BrokerAccess, known: Resolves = resolves) -> BrokerAccess:
    """``access`` with each URL the operator named in the fleet's namespace replaced by
    the URL as written when a host of the former does not resolve and every host of the
    latter does. When neither resolves the namespaced name stays: the error then names
    what the fleet's pods resolve. Blocking (the resolver)."""
    url = _chosen(access.url, access.written_url, known)
    management = _chosen(access.management_url, access.written_management_url, known)
    if url == access.url and management == access.management_url:
        return access
    return dataclasses.replace(access, url=url or access.url, management_url=management)
