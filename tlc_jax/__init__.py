"""tlc-jax: long-tailed image classification with transfer learning and active sampling."""

__version__ = "0.1.0"
