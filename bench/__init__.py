"""fishtune benchmarks: ``python -m bench.train|extract|synth --shapes tiny|s1-mini`` (see bench/README.md)."""
