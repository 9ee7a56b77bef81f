"""The OpenAPI 3.0 document of the HTTP RPC, served at `/openapi.json`.

Every method of `node.rpc.METHODS` is a path `/<method>` (the URI form, GET) whose parameters
come from the registry, typed by `PARAMETERS`; the JSON-RPC POST to `/` carries the same methods
and parameters. `RESULTS` gives each method's `result` schema (CometBFT's shapes; strings for
64-bit integers, upper-case hex for hashes, base64 for bytes), over the component schemas of
`COMPONENTS`. `tests/node/test_openapi.py` calls every method of a running node and validates
what it answers against this document, so the two cannot drift apart unseen.
"""

from __future__ import annotations

from typing import Any

from node.version import VERSION

JSON = dict[str, Any]

_S: JSON = {"type": "string"}
_I: JSON = {"type": "integer"}
_B: JSON = {"type": "boolean"}
_INT_STR: JSON = {"type": "string", "pattern": "^-?[0-9]+$"}
_HEX: JSON = {"type": "string", "pattern": "^[0-9A-F]*$"}
_B64: JSON = {"type": "string", "pattern": "^[A-Za-z0-9+/]*={0,2}$"}
_TIME: JSON = {"type": "string", "description": "RFC 3339, nanoseconds"}


def _ref(name: str) -> JSON:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(properties: JSON, *, optional: tuple[str, ...] = ()) -> JSON:
    """An object with these properties, all required but `optional`, others allowed."""
    return {
        "type": "object",
        "properties": properties,
        "required": [name for name in properties if name not in optional],
    }


def _array(items: JSON) -> JSON:
    return {"type": "array", "items": items}


def _nullable(schema: JSON) -> JSON:
    if "$ref" in schema:  # OpenAPI 3.0 ignores what stands beside a $ref
        return {"allOf": [schema], "nullable": True}
    return {**schema, "nullable": True}


COMPONENTS: dict[str, JSON] = {
    "BlockID": _obj({"hash": _HEX, "parts": _obj({"total": _I, "hash": _HEX})}),
    "PubKey": _obj({"type": _S, "value": _B64}),
    "Header": _obj(
        {
            "version": _obj({"block": _INT_STR, "app": _INT_STR}),
            "chain_id": _S,
            "height": _INT_STR,
            "time": _TIME,
            "last_block_id": _ref("BlockID"),
            **{
                name: _HEX
                for name in (
                    "last_commit_hash",
                    "data_hash",
                    "validators_hash",
                    "next_validators_hash",
                    "consensus_hash",
                    "app_hash",
                    "last_results_hash",
                    "evidence_hash",
                    "proposer_address",
                )
            },
        }
    ),
    "Commit": _obj(
        {
            "height": _INT_STR,
            "round": _I,
            "block_id": _ref("BlockID"),
            "signatures": _array(
                _obj(
                    {
                        "block_id_flag": _I,
                        "validator_address": _HEX,
                        "timestamp": _TIME,
                        "signature": _nullable(_B64),
                    }
                )
            ),
        }
    ),
    "Block": _obj(
        {
            "header": _ref("Header"),
            "data": _obj({"txs": _array(_B64)}),
            "evidence": _obj({"evidence": _array({"type": "object"})}),
            "last_commit": _ref("Commit"),
        }
    ),
    "BlockMeta": _obj(
        {"block_id": _ref("BlockID"), "block_size": _INT_STR, "header": _ref("Header"), "num_txs": _INT_STR}
    ),
    "Event": _obj({"type": _S, "attributes": _array(_obj({"key": _S, "value": _S, "index": _B}))}),
    "ExecTxResult": _obj(
        {
            "code": _I,
            "data": _nullable(_B64),
            "log": _S,
            "info": _S,
            "gas_wanted": _INT_STR,
            "gas_used": _INT_STR,
            "events": _array(_ref("Event")),
            "codespace": _S,
        }
    ),
    "ResultTx": _obj(
        {
            "hash": _HEX,
            "height": _INT_STR,
            "index": _I,
            "tx_result": _ref("ExecTxResult"),
            "tx": _B64,
            "proof": {"type": "object"},
        },
        optional=("proof",),
    ),
    "Validator": _obj(
        {"address": _HEX, "pub_key": _ref("PubKey"), "voting_power": _INT_STR, "proposer_priority": _INT_STR}
    ),
    "BroadcastResult": _obj({"code": _I, "data": _S, "log": _S, "codespace": _S, "hash": _HEX}),
    "ResultBlock": _obj({"block_id": _ref("BlockID"), "block": _nullable(_ref("Block"))}),
}

RESULTS: dict[str, JSON] = {
    "health": {"type": "object"},
    "status": _obj(
        {
            "node_info": _obj(
                {
                    "protocol_version": _obj({"p2p": _INT_STR, "block": _INT_STR, "app": _INT_STR}),
                    "id": _S,
                    "listen_addr": _S,
                    "network": _S,
                    "version": _S,
                    "channels": _S,
                    "moniker": _S,
                    "other": _obj({"tx_index": {"enum": ["on", "off"]}, "rpc_address": _S}),
                }
            ),
            "sync_info": _obj(
                {
                    "latest_block_hash": _HEX,
                    "latest_app_hash": _HEX,
                    "latest_block_height": _INT_STR,
                    "latest_block_time": _S,
                    "earliest_block_hash": _HEX,
                    "earliest_app_hash": _HEX,
                    "earliest_block_height": _INT_STR,
                    "earliest_block_time": _S,
                    "catching_up": _B,
                }
            ),
            "validator_info": _obj(
                {"address": _HEX, "pub_key": _nullable(_ref("PubKey")), "voting_power": _INT_STR}
            ),
        }
    ),
    "net_info": _obj(
        {"listening": _B, "listeners": _array(_S), "n_peers": _INT_STR, "peers": _array({"type": "object"})}
    ),
    "genesis": _obj({"genesis": {"type": "object"}}),
    "genesis_chunked": _obj({"chunk": _INT_STR, "total": _INT_STR, "data": _B64}),
    "abci_info": _obj(
        {
            "response": _obj(
                {"data": _S, "version": _S, "app_version": _INT_STR, "last_block_height": _INT_STR},
                optional=("last_block_height",),
            )
        }
    ),
    "consensus_state": _obj({"round_state": {"type": "object"}}),
    "dump_consensus_state": _obj({"round_state": {"type": "object"}, "peers": _array({"type": "object"})}),
    "block": _ref("ResultBlock"),
    "block_by_hash": _ref("ResultBlock"),
    "blockchain": _obj({"last_height": _INT_STR, "block_metas": _array(_ref("BlockMeta"))}),
    "header": _obj({"header": _nullable(_ref("Header"))}),
    "header_by_hash": _obj({"header": _nullable(_ref("Header"))}),
    "commit": _obj(
        {"signed_header": _obj({"header": _ref("Header"), "commit": _ref("Commit")}), "canonical": _B}
    ),
    "block_results": _obj(
        {
            "height": _INT_STR,
            "txs_results": _nullable(_array(_ref("ExecTxResult"))),
            "finalize_block_events": _array(_ref("Event")),
            "validator_updates": _nullable(_array({"type": "object"})),
            "consensus_param_updates": _nullable({"type": "object"}),
            "app_hash": _B64,
        }
    ),
    "validators": _obj(
        {
            "block_height": _INT_STR,
            "validators": _array(_ref("Validator")),
            "count": _INT_STR,
            "total": _INT_STR,
        }
    ),
    "consensus_params": _obj({"block_height": _INT_STR, "consensus_params": {"type": "object"}}),
    "check_tx": _obj({"code": _I, "log": _S, "codespace": _S}),
    "broadcast_tx_sync": _ref("BroadcastResult"),
    "broadcast_tx_async": _ref("BroadcastResult"),
    "broadcast_tx_commit": _obj(
        {"check_tx": {"type": "object"}, "tx_result": _ref("ExecTxResult"), "hash": _HEX, "height": _INT_STR}
    ),
    "broadcast_evidence": _obj({"hash": _HEX}),
    "tx": _ref("ResultTx"),
    "tx_search": _obj({"txs": _array(_ref("ResultTx")), "total_count": _INT_STR}),
    "block_search": _obj({"blocks": _array(_ref("ResultBlock")), "total_count": _INT_STR}),
    "unconfirmed_txs": _obj(
        {"n_txs": _INT_STR, "total": _INT_STR, "total_bytes": _INT_STR, "txs": _array(_B64)}
    ),
    "num_unconfirmed_txs": _obj(
        {"n_txs": _INT_STR, "total": _INT_STR, "total_bytes": _INT_STR, "txs": _nullable(_array(_B64))}
    ),
    "abci_query": _obj(
        {
            "response": _obj(
                {
                    "code": _I,
                    "log": _S,
                    "info": _S,
                    "index": _INT_STR,
                    "key": _nullable(_B64),
                    "value": _nullable(_B64),
                    "proofOps": _nullable({"type": "object"}),
                    "height": _INT_STR,
                    "codespace": _S,
                }
            )
        }
    ),
}

PARAMETERS: dict[str, tuple[JSON, str]] = {
    "height": (_INT_STR, "a block height (default: the latest)"),
    "hash": ({"type": "string"}, "a hash: 0x-hex in the URI form, base64 in JSON"),
    "prove": (_B, "include a proof"),
    "page": (_INT_STR, "page number, from 1"),
    "per_page": (_INT_STR, "items per page (30 by default, 100 at most)"),
    "order_by": ({"enum": ["", "asc", "desc"]}, "ascending (default) or descending height"),
    "query": (_S, "an event query: `tm.event = 'Tx' AND transfer.recipient = '<hex>'`"),
    "tx": (_S, "a transaction: 0x-hex in the URI form, base64 in JSON"),
    "path": (
        _S,
        "an application query path: /accounts/<hex>, /markets, /book/<TICKER>, /bridge, "
        "/bridge/withdrawals/<id>, /key...",
    ),
    "data": (_S, "query data (0x-hex)"),
    "minHeight": (_INT_STR, "lowest height (default 1)"),
    "maxHeight": (_INT_STR, "highest height (default the latest)"),
    "chunk": (_INT_STR, "chunk number, from 0"),
    "limit": (_INT_STR, "how many (30 by default, 100 at most)"),
    "evidence": (_S, "CometBFT's DuplicateVoteEvidence JSON, or its canonical bytes"),
}


def _envelope(result: JSON) -> JSON:
    return {
        "oneOf": [
            _obj({"jsonrpc": {"enum": ["2.0"]}, "id": {}, "result": result}),
            _obj(
                {
                    "jsonrpc": {"enum": ["2.0"]},
                    "id": {},
                    "error": _obj({"code": _I, "message": _S, "data": _S}, optional=("data",)),
                }
            ),
        ]
    }


def document(methods: dict[str, tuple[str, ...]]) -> JSON:
    """The OpenAPI document of `methods` (name -> parameter names, `node.rpc.METHODS`)."""
    paths: JSON = {}
    for name in sorted(methods):
        paths[f"/{name}"] = {
            "get": {
                "operationId": name,
                "summary": f"CometBFT's `{name}` (URI form)",
                "parameters": [
                    {
                        "name": param,
                        "in": "query",
                        "required": False,
                        "schema": PARAMETERS[param][0],
                        "description": PARAMETERS[param][1],
                    }
                    for param in methods[name]
                ],
                "responses": {
                    "200": {
                        "description": "the JSON-RPC response",
                        "content": {"application/json": {"schema": _envelope(RESULTS[name])}},
                    },
                    "500": {"description": "a JSON-RPC error (invalid parameters, not found, ...)"},
                },
            }
        }
    paths["/"] = {
        "post": {
            "operationId": "jsonrpc",
            "summary": "JSON-RPC 2.0: any method above with the same parameters, one call or a batch",
            "requestBody": {
                "content": {
                    "application/json": {
                        "schema": {
                            "oneOf": [
                                _obj(
                                    {
                                        "jsonrpc": {"enum": ["2.0"]},
                                        "id": {},
                                        "method": {"enum": sorted(methods)},
                                        "params": {},
                                    },
                                    optional=("id", "params"),
                                ),
                                _array({"type": "object"}),
                            ]
                        }
                    }
                }
            },
            "responses": {"200": {"description": "the JSON-RPC response (or an array for a batch)"}},
        }
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "derivd RPC",
            "version": VERSION,
            "description": (
                "CometBFT 0.38's RPC as derivd serves it; `/websocket` for subscriptions and "
                "market-data streams."
            ),
        },
        "paths": paths,
        "components": {"schemas": COMPONENTS},
    }


def json_schema(schema: Any) -> Any:
    """An OpenAPI 3.0 schema as JSON Schema: `nullable` becomes "or null"."""
    if isinstance(schema, list):
        return [json_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    converted = {key: json_schema(value) for key, value in schema.items() if key != "nullable"}
    if schema.get("nullable"):
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


def result_schema(doc: JSON, method: str) -> JSON:
    """The JSON Schema of `method`'s result, with the document's components (for validation)."""
    converted: JSON = json_schema({**RESULTS[method], "components": doc["components"]})
    return converted
