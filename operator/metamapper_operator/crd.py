"""The identity of the Metamapper CustomResourceDefinition: the one place that names it.

``crds/metamapper.io_metamappers.yaml`` is the schema; these constants are how the code
addresses objects of it (kopf's handlers, the API edge, owner references, and the tests,
benchmarks and development environment). ``tests/unit/test_crd.py`` checks that the two
agree.
"""

from __future__ import annotations

GROUP = "metamapper.io"
VERSION = "v1alpha1"
KIND = "Metamapper"
PLURAL = "metamappers"
SHORT_NAME = "mm"

API_VERSION = f"{GROUP}/{VERSION}"
#: The CustomResourceDefinition object's own name (``kubectl get crd <NAME>``).
NAME = f"{PLURAL}.{GROUP}"
