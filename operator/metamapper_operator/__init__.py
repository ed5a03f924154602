"""metamapper-operator: runs Metamapper's Celery worker fleets on Kubernetes."""

__version__ = "0.1.0"
