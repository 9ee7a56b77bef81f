"""The deterministic consensus simulator: many validators of the real state machine, WAL and
private validator in one process, on a seeded virtual network with faults."""
