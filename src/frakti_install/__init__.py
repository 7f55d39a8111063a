"""frakti-install: an idempotent installer for Kubernetes with the frakti runtime."""

__version__ = "0.1.0"
