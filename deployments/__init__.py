"""When and where flows run: every deployment, defined in one place."""

from deployments.definitions import DEPLOYMENTS, build_deployments, register_block_types, serve_all

__all__ = ["DEPLOYMENTS", "build_deployments", "register_block_types", "serve_all"]
