"""A trader following its fills as blocks commit (the user stream over the WebSocket), and the
book of one market kept from its stream.

    python -m node.sdk.examples.follow_fills --home ~/.derivd --from bob --market BTC-USD
"""

from __future__ import annotations

import argparse
from pathlib import Path

import trio

from node.keystore import KeyStore
from node.sdk import AsyncClient, Fill


async def follow(
    client: AsyncClient, limit: int | None = None, ready: trio.Event | None = None
) -> list[Fill]:
    """Print the account's fills as they come (`limit` of them, None: for ever); `ready` is set
    once the node has the subscription."""
    seen: list[Fill] = []
    async with client.fills() as fills:
        if ready is not None:
            ready.set()
        async for fill in fills:
            role = "maker" if fill.maker else "taker"
            print(f"height {fill.height}: {fill.side} {fill.size} {fill.market} at {fill.price} ({role})")
            seen.append(fill)
            if limit is not None and len(seen) >= limit:
                break
    return seen


async def watch_book(client: AsyncClient, market: str) -> None:
    async with client.book_updates(market) as books:
        async for book in books:
            bid, ask = book.best_bid, book.best_ask
            print(f"{market} seq {book.seq}: {bid.price if bid else '-'} / {ask.price if ask else '-'}")


async def main_async(args: argparse.Namespace) -> None:
    key = KeyStore(args.home).private_key(args.name)
    async with AsyncClient(args.node, key=key) as client, trio.open_nursery() as nursery:
        nursery.start_soon(watch_book, client, args.market)
        await follow(client)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--node", default="http://127.0.0.1:26657")
    parser.add_argument("--home", type=Path, default=Path.home() / ".derivd", help="home with the key store")
    parser.add_argument("--from", dest="name", required=True, help="key name")
    parser.add_argument("--market", default="BTC-USD")
    trio.run(main_async, parser.parse_args())


if __name__ == "__main__":
    main()
