"""The composition root: config, CLI, wiring of services, JSON-RPC, metrics, logging, events."""
