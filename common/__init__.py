"""Foundations every package shares: the error tree and the contract's closed
vocabularies. Imports nothing of the project."""
