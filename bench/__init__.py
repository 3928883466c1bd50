"""jitnet's benchmark suite, `python -m bench`: the method and the workloads are in bench/__main__.py."""
