"""The node's versions: derivd's own, and the CometBFT release line whose protocols it speaks."""

VERSION = "0.1.0"
"""derivd's version (`derivd version`; `abci_info`'s `version`, where CometBFT puts the app's)"""

COMETBFT_VERSION = "0.38.0"
"""the CometBFT line whose RPC, p2p and block protocols this node speaks: `node_info.version`
(clients such as CosmJS's `connectComet` choose their protocol by it)"""
