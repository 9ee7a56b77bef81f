"""The genesis file: its model, validation, reading and writing, and the generator of new genesis
documents for `derivd init` and the N-validator testnet (all in `genesis.genesis`)."""
