"""The chaos harness: a localnet of real `derivd start` processes under seeded faults (kill -9 and
restart, partitions, packet loss and delay, a double-signing twin) and order load, checked
afterwards for forks, lost committed txs, conservation and liveness (`python -m tests.chaos`)."""
