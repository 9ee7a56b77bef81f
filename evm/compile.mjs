// Compiles the bridge contracts reproducibly into ../node/bridge_contracts.json: solc (the pinned
// npm solcjs) in standard-JSON mode, optimizer 200 runs, evmVersion cancun, no metadata hash, the
// sources named by fixed relative paths; the output has sorted keys and a trailing newline.
//
//   node evm/compile.mjs           writes node/bridge_contracts.json
//   node evm/compile.mjs --check   compiles in memory; exit 1 if the committed file differs
import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const solc = require("solc");

const SOLC_VERSION = "0.8.28";
const HERE = dirname(fileURLToPath(import.meta.url));
const OUTPUT = join(HERE, "..", "node", "bridge_contracts.json");
const CONTRACTS = { DerivdBridge: "contracts/DerivdBridge.sol", TestUSD: "contracts/TestUSD.sol" };

function findImport(path) {
  // "@openzeppelin/..." from this directory's node_modules; nothing else may be imported.
  if (!path.startsWith("@openzeppelin/contracts/")) return { error: `import not allowed: ${path}` };
  try {
    return { contents: readFileSync(join(HERE, "node_modules", path), "utf8") };
  } catch (err) {
    return { error: `cannot read ${path}: ${err.message}` };
  }
}

function sortKeys(value) {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(
      Object.keys(value)
        .sort()
        .map((key) => [key, sortKeys(value[key])]),
    );
  }
  return value;
}

function compile() {
  if (!solc.version().startsWith(`${SOLC_VERSION}+`)) {
    throw new Error(`solc ${SOLC_VERSION} expected, found ${solc.version()}`);
  }
  const sources = {};
  for (const path of Object.values(CONTRACTS)) {
    sources[path] = { content: readFileSync(join(HERE, path), "utf8") };
  }
  const input = {
    language: "Solidity",
    sources,
    settings: {
      optimizer: { enabled: true, runs: 200 },
      evmVersion: "cancun",
      metadata: { bytecodeHash: "none" },
      outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
    },
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImport }));
  const errors = (output.errors ?? []).filter((e) => e.severity === "error");
  for (const e of output.errors ?? []) process.stderr.write(e.formattedMessage ?? e.message);
  if (errors.length > 0) throw new Error(`solc reported ${errors.length} error(s)`);
  const contracts = {};
  for (const [name, path] of Object.entries(CONTRACTS)) {
    const built = output.contracts[path][name];
    contracts[name] = { abi: built.abi, bytecode: `0x${built.evm.bytecode.object}` };
  }
  return `${JSON.stringify(sortKeys({ solc: solc.version(), contracts }), null, 2)}\n`;
}

const text = compile();
if (process.argv.includes("--check")) {
  let committed = null;
  try {
    committed = readFileSync(OUTPUT, "utf8");
  } catch {
    // missing: differs
  }
  if (committed !== text) {
    process.stderr.write(`${OUTPUT} differs from a fresh compile: run node evm/compile.mjs\n`);
    process.exit(1);
  }
  process.stdout.write(`${OUTPUT} matches a fresh compile (solc ${solc.version()})\n`);
} else {
  writeFileSync(OUTPUT, text);
  process.stdout.write(`wrote ${OUTPUT} (solc ${solc.version()})\n`);
}
