// CosmJS against a running derivd: `node check.mjs <ws url> <tx as base64> <tx_search query>`.
// connectComet must pick the CometBFT 0.38 client; blockchain, txSearch, blockResults (with
// finalize_block_events), subscribeNewBlock and subscribeTx (the tx broadcast over the same
// socket) must work unchanged. Prints one JSON line of what it saw; exits non-zero on a failure.
import { Comet38Client, connectComet } from "@cosmjs/tendermint-rpc";
import { fromBase64, toHex } from "@cosmjs/encoding";

const [url, txBase64, query] = process.argv.slice(2);
const fail = (why) => {
  console.error(`cosmjs check failed: ${why}`);
  process.exit(1);
};
const timer = setTimeout(() => fail("timed out after 60 s"), 60_000);

function take(stream, count) {
  return new Promise((resolve, reject) => {
    const got = [];
    const sub = stream.subscribe({
      next: (event) => {
        got.push(event);
        if (got.length === count) {
          sub.unsubscribe();
          resolve(got);
        }
      },
      error: reject,
      complete: () => reject(new Error("stream completed early")),
    });
  });
}

try {
  const client = await connectComet(url);
  if (!(client instanceof Comet38Client)) fail(`connectComet picked ${client.constructor.name}`);
  const status = await client.status();
  const chain = await client.blockchain();
  if (chain.blockMetas.length === 0) fail("blockchain returned no block metas");
  const tx = fromBase64(txBase64);
  const txEvent = take(client.subscribeTx(query), 1);
  const blocks = take(client.subscribeNewBlock(), 2);
  const broadcast = await client.broadcastTxSync({ tx });
  if (broadcast.code !== 0) fail(`broadcast refused: ${broadcast.log}`);
  const [seen] = await txEvent;
  if (toHex(seen.hash) !== toHex(broadcast.hash)) fail("the Tx event is another tx");
  const [first, second] = await blocks;
  if (second.header.height !== first.header.height + 1) fail("NewBlock heights not consecutive");
  const search = await client.txSearch({ query });
  if (search.totalCount < 1) fail(`txSearch ${query} found nothing`);
  const results = await client.blockResults(seen.height);
  const finalizeTypes = new Set();
  for (let height = 1; height <= second.header.height; height++) {
    for (const event of (await client.blockResults(height)).finalizeBlockEvents) finalizeTypes.add(event.type);
  }
  console.log(
    JSON.stringify({
      node_version: status.nodeInfo.version,
      blockchain_last_height: chain.lastHeight,
      block_metas: chain.blockMetas.length,
      tx_event_height: seen.height,
      tx_event_code: seen.result.code,
      tx_event_events: seen.result.events.map((e) => e.type),
      new_block_heights: [first.header.height, second.header.height],
      tx_search_total: search.totalCount,
      tx_search_first_hash: toHex(search.txs[0].hash).toUpperCase(),
      block_results_txs: results.results.length,
      finalize_block_event_types: [...finalizeTypes].sort(),
    }),
  );
  client.disconnect();
  clearTimeout(timer);
  process.exit(0);
} catch (error) {
  fail(error.stack ?? String(error));
}
