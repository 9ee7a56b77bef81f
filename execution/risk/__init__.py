"""Risk, run at the end of each block on the exchange: funding (premium samples, funding ticks;
`funding`), stop-loss and take-profit orders (`triggers`), and liquidation with the insurance fund
and deleveraging (`liquidation`). The three do not import each other (a contract of `make lint`);
`execution.block` runs them in order.
"""
