"""A market maker: at each new block, replaces its two quotes with a bid and an ask `spread`
around the oracle price, in one transaction (cancel-all, then both placements).

    python -m node.sdk.examples.market_maker --home ~/.derivd --from alice --market BTC-USD
"""

from __future__ import annotations

import argparse
import time
from decimal import Decimal
from pathlib import Path

from node.keystore import KeyStore
from node.sdk import Client, TxResult, core

POLL_SECONDS = 0.1
"""how often the height is read while waiting for the next block"""


def quote(client: Client, market: str, spread: Decimal, size: Decimal) -> TxResult:
    """Cancel this account's orders on `market` and quote both sides around the oracle price."""
    m = client.market(market)
    mid = client.oracle_price(market)
    bid = core.on_tick(m, mid * (1 - spread), up=False)
    ask = core.on_tick(m, mid * (1 + spread), up=True)
    return client.send(
        [
            core.cancel_all_action(m),
            core.place_action(m, "buy", size, bid, tif="post-only"),
            core.place_action(m, "sell", size, ask, tif="post-only"),
        ]
    )


def run(client: Client, market: str, spread: Decimal, size: Decimal, rounds: int | None = None) -> None:
    """Requote at each new block, `rounds` times (None: for ever)."""
    done, height = 0, 0
    while rounds is None or done < rounds:
        result = quote(client, market, spread, size)
        print(f"height {result.height}: quoted, order ids {result.placed_order_ids()}", flush=True)
        done, height = done + 1, result.height
        while rounds is None or done < rounds:
            if client.height() > height:
                break
            time.sleep(POLL_SECONDS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--node", default="http://127.0.0.1:26657")
    parser.add_argument("--home", type=Path, default=Path.home() / ".derivd", help="home with the key store")
    parser.add_argument("--from", dest="name", required=True, help="key name")
    parser.add_argument("--market", default="BTC-USD")
    parser.add_argument("--spread", type=Decimal, default=Decimal("0.001"), help="fraction of the price")
    parser.add_argument("--size", type=Decimal, default=Decimal("0.01"), help="base units per side")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args()
    key = KeyStore(args.home).private_key(args.name)
    with Client(args.node, key=key) as client:
        run(client, args.market, args.spread, args.size, args.rounds)


if __name__ == "__main__":
    main()
