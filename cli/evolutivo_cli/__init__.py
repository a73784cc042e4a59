"""`evolutivo`: the operator command line of the Evolutivo credit collection suite (docs/cli.md)."""
