"""Development, demo and test helpers: local services and a local control plane.

Nothing in here is imported by the operator's own code path; the production image
never runs it.
"""
