"""Workspaces: credentials, keys and settings, shared by the gateway, the workers and the CLI."""
