"""The peer comparison benchmark (run `python benchmarks/peers --help`)."""
