"""The development environment: local services, a local cluster with a real node, the
project's images, the demo. A top-level package of the checkout: never in the wheel or an
image, never imported by the operator."""
