// The local EVM chain of tests and localnets: `hardhat node` only (nothing is compiled here: the
// contracts are built by compile.mjs into node/bridge_contracts.json). A block per transaction;
// DERIVD_EVM_BLOCK_MS > 0 also mines an empty block every that many ms (`make evm-node`: 1000,
// so deposits get their confirmations on a localnet; the tests count blocks and leave it unset).
const intervalMs = Number(process.env.DERIVD_EVM_BLOCK_MS || 0);
/** @type import('hardhat/config').HardhatUserConfig */
module.exports = {
  defaultNetwork: "hardhat",
  networks: {
    hardhat: {
      chainId: 31337,
      hardfork: "cancun",
      mining: { auto: true, interval: intervalMs },
    },
  },
  // hardhat must never find (and try to compile with a downloaded solc) the contracts.
  paths: { sources: "./hardhat-sources-unused" },
};
