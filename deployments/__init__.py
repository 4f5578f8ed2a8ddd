"""When and where flows run: every deployment, defined in one place."""

from deployments.definitions import DEPLOYMENTS, build_deployments, serve_all

__all__ = ["DEPLOYMENTS", "build_deployments", "serve_all"]
