"""Short runnable examples of using tlc-jax pieces in other code."""
