"""``steering lab``: the system across regions on Linux network namespaces, with faults (docs/lab.md)."""
