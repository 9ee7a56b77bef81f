"""The node's LevelDB: the handle, the one key schema, atomic batches, the block and state stores."""
