"""Runnable examples of the SDK (`python -m node.sdk.examples.<name> --help`)."""
