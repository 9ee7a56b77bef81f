// The local EVM chain of tests and localnets: `hardhat node` only (nothing is compiled here: the
// contracts are built by compile.mjs into node/bridge_contracts.json).
/** @type import('hardhat/config').HardhatUserConfig */
module.exports = {
  defaultNetwork: "hardhat",
  networks: {
    hardhat: {
      chainId: 31337,
      hardfork: "cancun",
    },
  },
  // hardhat must never find (and try to compile with a downloaded solc) the contracts.
  paths: { sources: "./hardhat-sources-unused" },
};
