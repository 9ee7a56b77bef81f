"""Consensus: block, vote, commit and validator-set types; the Tendermint state machine (sans-io)
and its trio driver; vote sets; proposer selection; WAL; private validator; mempool; the
`Application` protocol the node's application implements; block execution into the stores."""
